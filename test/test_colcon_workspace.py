"""A ROS user's workspace, for real: this repository copied into a fresh workspace's src/, one plain
``colcon build``, ``source install/setup.bash``, and the nodes started from the install space exactly as
launch/predictor.launch.py starts them (read as source: launch_model.py), seen predicting from this
process. The launch file's packages, executables, parameter files, parameters and remappings are checked
against that install space and the running nodes.

The venv is the underlay here (what /opt/ros/<distro> is on a ROS install): AMENT_PREFIX_PATH names it,
as sourcing /opt/ros/<distro>/setup.bash would.
"""

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from launch_model import LaunchModel, setup_py_console_scripts
from node_process import start_node, stop_node, wait_until

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
COLCON = shutil.which("colcon", path=str(VENV / "bin")) or shutil.which("colcon")
# The launch as a user starts it with the simulator (simulated time included); a tiny random model.
LAUNCH_ARGUMENTS = {"sim": "true", "use_sim_time": "true", "checkpoint": "random:tiny", "scenario": "rover"}
REQUIRED_ARGUMENTS = {"checkpoint", "params_file", "image_topic", "pose_topic", "twist_topic", "odom_topic",
                      "camera_info_topic", "sim", "scenario", "use_sim_time", "namespace", "action_modality"}

# The ROS wheels' CMake exports name include directories of the machine that built them; scripts/setup.sh
# links them (as root). A ROS install (AMENT_PREFIX_PATH from /opt/ros) needs no links.
WHEEL_LINKS = Path("/opt/python/cp311-cp311/include/python3.11")
pytestmark = [
    pytest.mark.skipif(COLCON is None, reason="colcon not installed (scripts/setup.sh installs it)"),
    pytest.mark.skipif(not WHEEL_LINKS.exists() and "/opt/ros/" not in os.environ.get("AMENT_PREFIX_PATH", ""),
                       reason=f"{WHEEL_LINKS} missing: scripts/setup.sh links it when run as root"),
]
rclpy = pytest.importorskip("rclpy")

from rcl_interfaces.srv import ListParameters  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from astra_ros.ros.runner import BackgroundSpinner  # noqa: E402

try:
    from astra_ros.msg import PredictedFrames
except ImportError:  # scripts/setup.sh builds it; only the PredictedFrames check then skips
    PredictedFrames = None


def _repository_files() -> list[str]:
    """The files a clone would have (tracked, and new ones not ignored), relative to the repository."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                check=True, capture_output=True).stdout.decode()
        return [f for f in listed.split("\0") if f and (REPO / f).is_file()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything but build products
        skip = {".git", ".venv", "build", "install", "log", "__pycache__"}
        return [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(REPO).parts)]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("AMENT_PREFIX_PATH", str(VENV))
    env["MAKEFLAGS"] = "-j2"
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A workspace with this repository in src/astra_ros, built with a plain ``colcon build``."""
    root = tmp_path_factory.mktemp("ws")
    source = root / "src" / "astra_ros"
    for name in _repository_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    start = time.monotonic()
    build = subprocess.run([COLCON, "build"], cwd=root, env=_environment(), capture_output=True, text=True,
                           timeout=600)
    log = root / "log" / "latest_build" / "astra_ros" / "stdout_stderr.log"
    detail = log.read_text()[-3000:] if log.exists() else build.stderr[-3000:]
    assert build.returncode == 0, f"colcon build failed:\n{build.stdout[-2000:]}\n{detail}"
    print(f"colcon build: {time.monotonic() - start:.1f} s")
    return root


def _prefix(workspace: Path) -> Path:
    return workspace / "install" / "astra_ros"


def _share_dir(workspace: Path):
    def share(package: str) -> Path:
        """The package's share directory as the ament index of the install space names it."""
        for prefix in sorted((workspace / "install").iterdir()):
            if (prefix / "share" / "ament_index" / "resource_index" / "packages" / package).is_file():
                return prefix / "share" / package
        raise AssertionError(f"package {package!r} is not in the install space's ament index")
    return share


def _sourced(workspace: Path, command: list[str]) -> list[str]:
    """``command`` run by bash after ``source install/setup.bash``, as a user's terminal would."""
    return ["bash", "-c", f'source "{workspace}/install/setup.bash" && exec "$@"', "bash", *command]


def test_install_space_holds_the_ros_layout(workspace):
    prefix = _prefix(workspace)
    site = next(prefix.glob("lib/python3*/site-packages"))
    # One package: the Python sources and the generated interfaces side by side, the sources' __init__.
    assert (site / "astra_ros" / "ros" / "predictor_node.py").is_file()
    assert list((site / "astra_ros" / "msg").glob("_predicted_frames.py"))
    assert list((site / "astra_ros" / "srv").glob("_imagine.py"))
    assert (site / "astra_ros" / "__init__.py").read_text() == (REPO / "astra_ros" / "__init__.py").read_text()
    assert (prefix / "share" / "astra_ros" / "package.xml").is_file()
    assert (prefix / "share" / "astra_ros" / "launch" / "predictor.launch.py").is_file()
    assert (prefix / "share" / "astra_ros" / "config" / "predictor.yaml").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "rosidl_interfaces" / "astra_ros").is_file()
    # Every console script of setup.py: the nodes in lib/astra_ros (ros2 run), the astra-* tools on PATH.
    for name, target in setup_py_console_scripts().items():
        script = prefix / ("bin" if name.startswith("astra-") else "lib/astra_ros") / name
        assert script.is_file() and os.access(script, os.X_OK), f"{script} missing"
        module, function = target.split(":")
        assert f"from {module} import {function}" in script.read_text()
    # Sourced, the install space's astra_ros (not this checkout's) is what Python imports.
    probe = subprocess.run(_sourced(workspace, [sys.executable, "-c", "import astra_ros, astra_ros.msg, astra_ros.srv; "
                                                "print(astra_ros.__file__); print(astra_ros.msg.__file__)"]),
                           cwd="/", env=_environment(), capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    package_file, msg_file = probe.stdout.split()
    assert Path(package_file).is_relative_to(prefix) and Path(msg_file).is_relative_to(prefix)


@pytest.fixture(scope="module")
def launched(workspace):
    """The launch file's nodes started from the install space, and a client node recording predictions."""
    model = LaunchModel(_share_dir(workspace)("astra_ros") / "launch" / "predictor.launch.py")
    commands = model.node_commands(LAUNCH_ARGUMENTS, _share_dir(workspace))
    processes = []
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("astra_workspace_test", context=context)
    record = {"image": [], "frames": []}
    lock = threading.Lock()

    def keep(name):
        def callback(msg):
            with lock:
                record[name].append(msg)
        return callback

    node.create_subscription(Image, "/astra_predictor/predicted/image", keep("image"), QoSProfile(depth=20))
    if PredictedFrames is not None:
        node.create_subscription(PredictedFrames, "/astra_predictor/predicted/frames", keep("frames"), QoSProfile(depth=20))
    spinner = BackgroundSpinner(node)
    try:
        for command in commands:
            if command.condition:
                executable = _share_dir(workspace)(command.package).parent.parent / "lib" / command.package / command.executable
                processes.append(start_node(_sourced(workspace, [str(executable), *command.ros_args()]), workspace,
                                            env=_environment()))
        yield {"model": model, "commands": commands, "node": node, "record": record, "lock": lock,
               "processes": processes}
    finally:
        spinner.stop()
        node.destroy_node()
        rclpy.shutdown(context=context)
        for process in processes:
            print(stop_node(process)[-3000:])


def test_nodes_from_the_install_space_predict_for_another_process(launched):
    started = time.monotonic()
    record, lock = launched["record"], launched["lock"]

    def detail():
        return "; ".join(f"exit {p.poll()}" for p in launched["processes"])

    assert len(launched["processes"]) == 2  # sim:=true starts the simulator too
    wait_until(lambda: len(record["image"]) >= 2 or any(p.poll() is not None for p in launched["processes"]), 90.0,
               "predicted images from the install space's predictor", detail)
    assert all(p.poll() is None for p in launched["processes"]), detail()
    with lock:
        image = record["image"][-1]
    assert (image.width, image.height, image.encoding) == (32, 32, "rgb8")  # random:tiny predicts 32x32
    assert image.header.frame_id == "camera_optical_frame"
    # use_sim_time:=true: the predictor's stamps are the simulator's /clock, which starts at the wall clock.
    assert abs(image.header.stamp.sec - time.time()) < 120
    if PredictedFrames is not None:
        wait_until(lambda: len(record["frames"]) >= 1, 20.0, "a PredictedFrames message")
        with lock:
            frames = record["frames"][-1]
        assert len(frames.frames) >= 1 and frames.frames[0].width == 32
    print(f"first predictions after {time.monotonic() - started:.1f} s")


def _declared_parameters(node, name: str) -> set[str]:
    client = node.create_client(ListParameters, f"/{name}/list_parameters")
    try:
        assert client.wait_for_service(timeout_sec=30.0), f"/{name}/list_parameters not available"
        future = client.call_async(ListParameters.Request())
        wait_until(future.done, 30.0, f"{name}'s parameter list")
        return set(future.result().result.names)
    finally:
        node.destroy_client(client)


def test_launch_file_matches_the_install_space_and_the_running_nodes(workspace, launched):
    model, commands, node = launched["model"], launched["commands"], launched["node"]
    assert REQUIRED_ARGUMENTS <= set(model.arguments)
    for argument in model.arguments.values():
        assert argument.description, f"launch argument {argument.name} has no description"
    used = set().union(*(c.used_configurations for c in commands))
    assert set(model.arguments) - used == set(), "declared launch arguments no node uses"
    prefix = _prefix(workspace)
    wait_until(lambda: len(launched["record"]["image"]) >= 1, 90.0, "the nodes to be up")
    for command in commands:
        executable = prefix / "lib" / command.package / command.executable
        assert executable.is_file() and os.access(executable, os.X_OK), f"{executable} is not installed"
        declared = _declared_parameters(node, command.name)
        for path in command.parameter_files:
            assert path.is_file(), f"parameter file {path} is not installed"
            assert path.is_relative_to(prefix / "share" / command.package)
            content = yaml.safe_load(path.read_text())
            (key,) = content
            assert key in (command.name, f"/**/{command.name}", f"/{command.name}"), key
            unknown = set(content[key]["ros__parameters"]) - declared
            assert not unknown, f"{path.name} sets parameters {command.name} does not declare: {sorted(unknown)}"
        unknown = set(command.parameters) - declared
        assert not unknown, f"the launch file sets parameters {command.name} does not declare: {sorted(unknown)}"
        # Each remapping must have matched: its target is a topic the running node really uses.
        topics = {name for name, _ in node.get_subscriber_names_and_types_by_node(command.name, "/")}
        topics |= {name for name, _ in node.get_publisher_names_and_types_by_node(command.name, "/")}
        for source, target in command.remappings:
            assert target in topics, f"remapping {source}:={target} matched nothing in {command.name} (topics: {sorted(topics)})"
    predictor = next(c for c in commands if c.name == "astra_predictor")
    assert predictor.parameters["use_sim_time"] is True and predictor.parameters["checkpoint"] == "random:tiny"
    simulator = next(c for c in commands if c.name == "astra_sim")
    assert "use_sim_time" not in simulator.parameters  # the /clock source keeps wall time itself
