"""Start astra_predictor with config/predictor.yaml, and optionally the simulator as its camera.

    ros2 launch astra_ros predictor.launch.py checkpoint:=default image_topic:=/camera/image_raw
    ros2 launch astra_ros predictor.launch.py sim:=true use_sim_time:=true scenario:=rover checkpoint:=random:tiny
    ros2 launch astra_ros predictor.launch.py namespace:=robot1 action_modality:=camera pose_topic:=/robot1/camera/pose

Needs a colcon (or other non-editable) install of astra_ros: launch_ros finds the executables in
lib/astra_ros and the parameters in share/astra_ros (docs/ROS_WORKSPACE.md). Without a ROS install (pip
wheels only: no launch_ros), start the same processes with the console scripts: ``astra-sim-node`` and
``astra-predictor --ros-args --params-file config/predictor.yaml -r image:=...``.
test/test_colcon_workspace.py checks every package, executable, parameter and remapping named here
against a real colcon install space and the running nodes.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument("checkpoint", default_value="default",
                              description="model: 'default', a checkpoint directory, or 'random:tiny' (random weights)"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("astra_ros"), "config", "predictor.yaml"]),
                              description="YAML parameters of astra_predictor; checkpoint, action_modality, "
                                          "use_sim_time and twist_stamped come from their launch arguments instead"),
        DeclareLaunchArgument("action_modality", default_value="twist",
                              description="actions fed to the model: camera, robot, twist or keys"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the nodes started here"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="astra_predictor follows /clock (true with sim:=true or a simulator or bag player)"),
        DeclareLaunchArgument("twist_stamped", default_value="false",
                              description="velocity commands are geometry_msgs/TwistStamped (Nav2 on Jazzy and later)"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="camera images (sensor_msgs/Image)"),
        DeclareLaunchArgument("pose_topic", default_value="/camera/pose",
                              description="camera or end-effector pose (geometry_msgs/PoseStamped)"),
        DeclareLaunchArgument("twist_topic", default_value="/cmd_vel",
                              description="velocity commands (geometry_msgs/Twist or TwistStamped)"),
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
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        # Later entries win in launch_ros: these four launch arguments override the same keys of params_file.
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "checkpoint": LaunchConfiguration("checkpoint"),
                "action_modality": LaunchConfiguration("action_modality"),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                "twist_stamped": ParameterValue(LaunchConfiguration("twist_stamped"), value_type=bool),
            },
        ],
        remappings=[
            ("image", LaunchConfiguration("image_topic")),
            ("pose", LaunchConfiguration("pose_topic")),
            ("twist", LaunchConfiguration("twist_topic")),
            ("odom", LaunchConfiguration("odom_topic")),
            ("camera_info", LaunchConfiguration("camera_info_topic")),
        ],
    )
    # The simulator keeps wall time itself (it is the /clock source): no use_sim_time for it.
    simulator = Node(
        package="astra_ros",
        executable="sim",
        name="astra_sim",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[{
            "scenario": LaunchConfiguration("scenario"),
            "cmd_vel_stamped": ParameterValue(LaunchConfiguration("twist_stamped"), value_type=bool),
        }],
        condition=IfCondition(LaunchConfiguration("sim")),
    )
    return LaunchDescription(arguments + [simulator, predictor])
