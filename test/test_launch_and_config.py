"""launch/predictor.launch.py, config/*.yaml and the install rules, checked from the source tree.

No launch library is needed or faked: launch_model.py evaluates the launch file's AST. The same file is
checked against a real colcon install space and running nodes in test_colcon_workspace.py; here the
fast checks run against the source tree (config/ and launch/ are what share/astra_ros holds).
"""

import importlib
import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from launch_model import LaunchModel, setup_py_console_scripts

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "predictor.launch.py"
ARGUMENTS = {"checkpoint", "params_file", "image_topic", "pose_topic", "twist_topic", "odom_topic", "camera_info_topic",
             "sim", "scenario", "use_sim_time", "namespace", "action_modality"}
NODE_MODULES = {"predictor": "astra_ros.ros.predictor_node", "sim": "astra_ros.ros.sim_node",
                "planner": "astra_ros.ros.planner_node"}


def _source_share(package: str) -> Path:
    assert package == "astra_ros", package
    return REPO  # share/astra_ros/{config,launch} are installed from the repository's config/ and launch/


def _cmake_console_scripts() -> dict[str, str]:
    text = (REPO / "CMakeLists.txt").read_text()
    return dict(re.findall(r'"([\w-]+)=([\w.]+:\w+)"', text))


def test_launch_file_declares_described_arguments_and_uses_them_all():
    model = LaunchModel(LAUNCH_FILE)
    assert ARGUMENTS <= set(model.arguments)
    assert all(argument.description for argument in model.arguments.values())
    commands = model.node_commands({}, _source_share)
    assert set(model.arguments) == set().union(*(c.used_configurations for c in commands))
    assert {c.name: c.condition for c in commands} == {"astra_predictor": True, "astra_sim": False}  # sim:=false


def test_launch_arguments_reach_the_nodes():
    model = LaunchModel(LAUNCH_FILE)
    commands = {c.name: c for c in model.node_commands(
        {"sim": "true", "use_sim_time": "true", "namespace": "robot1", "action_modality": "camera",
         "twist_stamped": "true", "pose_topic": "/robot1/camera/pose"}, _source_share)}
    predictor, simulator = commands["astra_predictor"], commands["astra_sim"]
    assert simulator.condition is True
    assert predictor.namespace == simulator.namespace == "robot1"
    assert predictor.parameters["use_sim_time"] is True and predictor.parameters["action_modality"] == "camera"
    assert predictor.parameters["twist_stamped"] is True and simulator.parameters["cmd_vel_stamped"] is True
    assert "use_sim_time" not in simulator.parameters  # the /clock source must not wait for /clock
    assert ("pose", "/robot1/camera/pose") in predictor.remappings
    assert predictor.parameter_files == [REPO / "config" / "predictor.yaml"]
    args = predictor.ros_args()
    assert args[:5] == ["--ros-args", "-r", "__node:=astra_predictor", "-r", "__ns:=/robot1"]
    assert "use_sim_time:=true" in args and "pose:=/robot1/camera/pose" in args


def test_launch_file_refuses_what_it_does_not_model(tmp_path):
    """A construct the check does not know (here a made-up launch action) fails instead of passing unseen."""
    changed = tmp_path / "changed.launch.py"
    changed.write_text(LAUNCH_FILE.read_text().replace(
        "from launch_ros.actions import Node", "from launch_ros.actions import Node, LifecycleNode"))
    with pytest.raises(AssertionError, match="LifecycleNode"):
        LaunchModel(changed)
    renamed = tmp_path / "renamed.launch.py"
    renamed.write_text(LAUNCH_FILE.read_text().replace('LaunchConfiguration("scenario")', 'LaunchConfiguration("scene")'))
    with pytest.raises(AssertionError, match="scene"):
        LaunchModel(renamed).node_commands({"sim": "true"}, _source_share)


def test_nodes_run_console_scripts_that_setup_py_and_cmake_both_install():
    model = LaunchModel(LAUNCH_FILE)
    scripts, cmake = setup_py_console_scripts(), _cmake_console_scripts()
    assert cmake == scripts, "CMakeLists.txt and setup.py must install the same console scripts"
    for command in model.node_commands({"sim": "true"}, _source_share):
        assert command.package == "astra_ros"
        assert scripts[command.executable] == f"{NODE_MODULES[command.executable]}:main"
    assert scripts["astra-predictor"] == scripts["predictor"] and scripts["astra-sim-node"] == scripts["sim"]


@pytest.mark.parametrize("node", ["predictor", "sim"])
def test_launch_parameters_are_declared_by_the_nodes(node):
    pytest.importorskip("rclpy")
    declared = set(importlib.import_module(NODE_MODULES[node]).PARAMETERS) | {"use_sim_time"}  # rclpy declares it
    model = LaunchModel(LAUNCH_FILE)
    name = {"predictor": "astra_predictor", "sim": "astra_sim"}[node]
    (command,) = [c for c in model.node_commands({"sim": "true"}, _source_share) if c.name == name]
    assert set(command.parameters) <= declared, set(command.parameters) - declared


def test_cmake_installs_launch_config_and_the_interfaces():
    text = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r'install\(DIRECTORY launch/ DESTINATION "share/\$\{PROJECT_NAME\}/launch"', text)
    assert 'install(FILES ${config_files} DESTINATION "share/${PROJECT_NAME}/config")' in text
    assert '"msg/PredictedFrames.msg"' in text and '"srv/Imagine.srv"' in text
    assert not (REPO / "interfaces").exists()  # one package: nothing for colcon to need --base-paths for


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
