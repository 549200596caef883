"""launch/predictor.launch.py and config/predictor.yaml, checked without launch_ros (no PyPI wheel).

The launch file runs against recording stand-ins for the launch modules, so its arguments, executables,
parameters and remappings are checked here; where launch_ros is importable it is also loaded for real.
"""

import ast
import configparser
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "predictor.launch.py"
PARAMS_FILE = REPO / "config" / "predictor.yaml"
ARGUMENTS = {"checkpoint", "params_file", "image_topic", "pose_topic", "twist_topic", "odom_topic", "camera_info_topic", "sim"}


def _setup_py_console_scripts() -> dict[str, str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.match(r"^[\w-]+ = [\w.]+:\w+$", node.value):
            name, target = (part.strip() for part in node.value.split("="))
            scripts[name] = target
    return scripts


class _Recorder:
    """Stands in for every launch class: remembers its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _fake_launch_modules() -> dict[str, types.ModuleType]:
    modules = {}
    for name in ("launch", "launch.actions", "launch.conditions", "launch.substitutions",
                 "launch_ros", "launch_ros.actions", "launch_ros.substitutions"):
        module = types.ModuleType(name)
        module.__getattr__ = lambda attribute, _name=name: type(attribute, (_Recorder,), {})
        modules[name] = module
    return modules


def _load_launch_file(monkeypatch):
    for name, module in _fake_launch_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("predictor_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def test_launch_file_parses_and_imports_launch_ros():
    tree = ast.parse(LAUNCH_FILE.read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {"launch", "launch_ros.actions"} <= imported
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)


def test_launch_file_declares_arguments_and_starts_installed_executables(monkeypatch):
    description = _load_launch_file(monkeypatch)
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert ARGUMENTS <= set(declared)
    assert all(kwargs.get("description") for kwargs in declared.values())
    params_default = declared["params_file"]["default_value"]  # share/astra_ros/config/predictor.yaml
    assert params_default.args[0][1:] == ["config", "predictor.yaml"]
    assert params_default.args[0][0].args == ("astra_ros",)
    nodes = {e.kwargs["name"]: e.kwargs for e in entities if type(e).__name__ == "Node"}
    assert set(nodes) == {"astra_predictor", "astra_sim"}
    scripts = _setup_py_console_scripts()
    for kwargs in nodes.values():
        assert kwargs["package"] == "astra_ros"
        assert kwargs["executable"] in scripts, f"{kwargs['executable']} is not a console script in setup.py"
    assert scripts["predictor"] == scripts["astra-predictor"] == "astra_ros.ros.predictor_node:main"
    assert scripts["sim"] == scripts["astra-sim-node"] == "astra_ros.ros.sim_node:main"
    assert scripts["planner"] == scripts["astra-planner"] == "astra_ros.ros.planner_node:main"
    remapped = {source: target.args[0] for source, target in nodes["astra_predictor"]["remappings"]}
    assert remapped == {"image": "image_topic", "pose": "pose_topic", "twist": "twist_topic", "odom": "odom_topic",
                        "camera_info": "camera_info_topic"}
    assert nodes["astra_sim"]["condition"].args[0].args == ("sim",)


def test_setup_installs_launch_and_config_and_scripts_for_ros2_run():
    text = (REPO / "setup.py").read_text()
    assert '"/launch", glob("launch/*.launch.py")' in text and '"/config", glob("config/*.yaml")' in text
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    assert config["install"]["install_scripts"] == "$base/lib/astra_ros"


@pytest.mark.parametrize("node", ["predictor", "planner"])
def test_params_file_lists_every_declared_parameter_with_its_type(node):
    pytest.importorskip("rclpy")
    module = importlib.import_module(f"astra_ros.ros.{node}_node")
    declared = module.PARAMETERS

    parameters = yaml.safe_load((REPO / "config" / f"{node}.yaml").read_text())[f"/**/astra_{node}"]["ros__parameters"]
    assert set(parameters) == set(declared)
    for name, value in parameters.items():
        assert type(value) is type(declared[name].default), f"{name}: {value!r} has the wrong type"
        assert value == declared[name].default


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None, reason="launch_ros is not installed (no PyPI wheel)")
def test_launch_file_loads_with_launch_ros():
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    source = PythonLaunchDescriptionSource(str(LAUNCH_FILE))
    description = source.get_launch_description(None)
    names = {argument.name for argument in description.get_launch_arguments()}
    assert ARGUMENTS <= names
