"""The thin rclpy layer: nodes (predictor, simulator) and message conversions.

Only this package imports rclpy; the ROS-free parts (:mod:`astra_ros.ros.sync`,
:mod:`astra_ros.ros.predictor_core`) are tested without it.
"""
