"""astra_ros with plain pip (`pip install -e .` for development, `pip install .`).

In a ROS workspace colcon builds the package from CMakeLists.txt instead (package.xml: ament_cmake), which
also generates astra_ros.msg / astra_ros.srv and installs the scripts below to lib/astra_ros and bin.
`pip install -e` installs no data_files (no share/astra_ros, no lib/astra_ros): see docs/ROS_WORKSPACE.md.
"""

from glob import glob

from setuptools import find_packages, setup

package_name = "astra_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={package_name: ["checkpoints/*/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
    ],
    python_requires=">=3.10",
    install_requires=[
        # Pinned: a CPU build of this version is on local disk; a loose "torch" pulls a multi-GB CUDA build.
        "torch==2.13.0",
        "diffusers>=0.35",
        "safetensors",
        "numpy",
        "scipy",
        "pillow",
        "tqdm",
        "pyyaml",
        "matplotlib",
        "mujoco>=3.1",
        "rosbags>=0.10",
        "opencv-python-headless",
    ],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="astra_ros maintainers",
    maintainer_email="maintainers@astra-ros.dev",
    description="Astra interactive world model for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "astra-rollout = astra_ros.cli.rollout:main",
            "astra-sim = astra_ros.cli.sim:main",
            "astra-train = astra_ros.cli.train:main",
            "astra-eval = astra_ros.cli.eval:main",
            "astra-bench = astra_ros.cli.bench:main",
            "astra-predictor = astra_ros.ros.predictor_node:main",
            "astra-sim-node = astra_ros.ros.sim_node:main",
            "astra-demo = astra_ros.ros.demo:main",
            "astra-planner = astra_ros.ros.planner_node:main",
            # `ros2 run astra_ros predictor` / `sim` / `planner`: CMakeLists.txt installs these to lib/astra_ros
            "predictor = astra_ros.ros.predictor_node:main",
            "sim = astra_ros.ros.sim_node:main",
            "planner = astra_ros.ros.planner_node:main",
        ],
    },
)
