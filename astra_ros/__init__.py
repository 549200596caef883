"""astra_ros: an interactive world model (Astra) for ROS 2 robots.

The ROS-free core lives in :mod:`astra_ros.model` (PyTorch) and :mod:`astra_ros.data`
(simulator scenes and bag reading); :mod:`astra_ros.ros` is the thin rclpy layer.
"""

__version__ = "0.1.0"
