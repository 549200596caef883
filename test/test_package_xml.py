"""package.xml names a rosdep key for every module astra_ros imports, as `rosdep check` would need, and
setup.py's install_requires the pip distribution of every third-party one (imports read with ast)."""

import ast
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Third-party module -> (rosdep key, pip distribution). apt-backed keys where rosdep has one, "-pip" keys
# otherwise; torch's key is python3-torch (the venv gets torch from pip: docs/ROS_WORKSPACE.md).
THIRD_PARTY = {
    "numpy": ("python3-numpy", "numpy"),
    "cv2": ("python3-opencv", "opencv-python-headless"),
    "scipy": ("python3-scipy", "scipy"),
    "yaml": ("python3-yaml", "pyyaml"),
    "PIL": ("python3-pil", "pillow"),
    "tqdm": ("python3-tqdm", "tqdm"),
    "matplotlib": ("python3-matplotlib", "matplotlib"),
    "safetensors": ("python3-safetensors-pip", "safetensors"),
    "diffusers": ("python3-diffusers-pip", "diffusers"),
    "mujoco": ("python3-mujoco-pip", "mujoco"),
    "rosbags": ("python3-rosbags-pip", "rosbags"),
    "torch": ("python3-torch", "torch"),
}


def _is_ros_package(module: str) -> bool:
    """ROS packages are their own rosdep keys (rclpy, *_msgs, *_srvs, *_interfaces)."""
    return module == "rclpy" or re.fullmatch(r"\w+_(msgs|srvs|interfaces)", module) is not None


def imported_modules(root: Path = REPO / "astra_ros") -> dict[str, set[str]]:
    """Top-level modules imported anywhere under ``root`` (absolute imports only), with the files importing them."""
    modules: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "astra_ros":
                    modules.setdefault(top, set()).add(str(path.relative_to(root.parent)))
    return modules


def _package_xml_keys() -> tuple[set[str], set[str]]:
    root = ElementTree.parse(REPO / "package.xml").getroot()
    run = {e.text.strip() for e in root if e.tag in ("exec_depend", "depend")}
    build = {e.text.strip() for e in root if e.tag in ("buildtool_depend", "build_depend", "depend")}
    return run, build


def test_every_import_has_a_rosdep_key_in_package_xml():
    run_keys, _ = _package_xml_keys()
    missing = []
    for module, files in sorted(imported_modules().items()):
        if _is_ros_package(module):
            key = module
        elif module in THIRD_PARTY:
            key = THIRD_PARTY[module][0]
        else:
            missing.append(f"{module} (imported by {', '.join(sorted(files))}): no rosdep key known; add one to "
                           "package.xml and THIRD_PARTY here")
            continue
        if key not in run_keys:
            missing.append(f"{module}: package.xml lacks <exec_depend>{key}</exec_depend>")
    assert not missing, "\n".join(missing)


def test_package_xml_has_no_python_keys_nothing_imports():
    run_keys, _ = _package_xml_keys()
    used = {THIRD_PARTY[m][0] for m in imported_modules() if m in THIRD_PARTY}
    stale = {k for k in run_keys if k.startswith("python3-") and k != "python3-pytest"} - used
    assert not stale, f"package.xml declares {sorted(stale)}, which nothing under astra_ros/ imports"


def test_setup_py_requires_every_third_party_import():
    tree = ast.parse((REPO / "setup.py").read_text())
    requires = next(k.value for n in ast.walk(tree) if isinstance(n, ast.Call)
                    for k in n.keywords if k.arg == "install_requires")
    names = {re.split(r"[<>=!~ \[]", ast.literal_eval(e))[0].lower() for e in requires.elts}
    needed = {THIRD_PARTY[m][1] for m in imported_modules() if m in THIRD_PARTY}
    assert needed <= names, f"setup.py install_requires lacks {sorted(needed - names)}"
    assert names <= needed, f"setup.py requires {sorted(names - needed)}, which nothing under astra_ros/ imports"


def test_package_xml_builds_the_interfaces_in_one_ament_cmake_package():
    root = ElementTree.parse(REPO / "package.xml").getroot()
    _, build = _package_xml_keys()
    assert root.findtext("name") == "astra_ros"
    assert root.find("export/build_type").text == "ament_cmake"
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= build
    assert root.findtext("member_of_group") == "rosidl_interface_packages"
    assert "schematypens=" in (REPO / "package.xml").read_text().split("\n")[1]  # the xml-model's attribute


def test_the_check_finds_imports_and_flags_an_unknown_one(tmp_path):
    (tmp_path / "mod.py").write_text("import numpy as np\nfrom rclpy.node import Node\nimport os\n"
                                     "try:\n    import some_new_lib.sub\nexcept ImportError:\n    pass\n")
    modules = imported_modules(tmp_path)
    assert set(modules) == {"numpy", "rclpy", "some_new_lib"}
    assert "some_new_lib" not in THIRD_PARTY and not _is_ros_package("some_new_lib")
