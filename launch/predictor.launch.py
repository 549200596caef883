"""Start astra_predictor with config/predictor.yaml, and optionally the simulator as its camera.

    ros2 launch astra_ros predictor.launch.py checkpoint:=default image_topic:=/camera/image_raw
    ros2 launch astra_ros predictor.launch.py sim:=true scenario:=rover checkpoint:=random:tiny

Without a ROS install (pip wheels only: no launch_ros), start the same processes with the console
scripts: ``astra-sim-node`` and ``astra-predictor --ros-args --params-file config/predictor.yaml -r image:=...``.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument("checkpoint", default_value="default",
                              description="model: 'default', a checkpoint directory, or 'random:tiny' (random weights)"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("astra_ros"), "config", "predictor.yaml"]),
                              description="YAML parameters of astra_predictor"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="camera images (sensor_msgs/Image)"),
        DeclareLaunchArgument("pose_topic", default_value="/camera/pose",
                              description="camera or end-effector pose (geometry_msgs/PoseStamped)"),
        DeclareLaunchArgument("twist_topic", default_value="/cmd_vel", description="velocity commands (geometry_msgs/Twist)"),
        DeclareLaunchArgument("odom_topic", default_value="/odom", description="odometry (nav_msgs/Odometry)"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                              description="camera intrinsics (sensor_msgs/CameraInfo; optional)"),
        DeclareLaunchArgument("sim", default_value="false", description="also start astra_sim as the camera source"),
        DeclareLaunchArgument("scenario", default_value="rover", description="astra_sim scene: explore, arm or rover"),
    ]
    predictor = Node(
        package="astra_ros",
        executable="predictor",
        name="astra_predictor",
        output="screen",
        parameters=[LaunchConfiguration("params_file"), {"checkpoint": LaunchConfiguration("checkpoint")}],
        remappings=[
            ("image", LaunchConfiguration("image_topic")),
            ("pose", LaunchConfiguration("pose_topic")),
            ("twist", LaunchConfiguration("twist_topic")),
            ("odom", LaunchConfiguration("odom_topic")),
            ("camera_info", LaunchConfiguration("camera_info_topic")),
        ],
    )
    simulator = Node(
        package="astra_ros",
        executable="sim",
        name="astra_sim",
        output="screen",
        parameters=[{"scenario": LaunchConfiguration("scenario")}],
        condition=IfCondition(LaunchConfiguration("sim")),
    )
    return LaunchDescription(arguments + [simulator, predictor])
