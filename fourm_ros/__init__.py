"""fourm_ros: 4M-21 any-to-any perception (depth, normals, segmentation, human pose, captions) for ROS 2.

Everything below ``fourm_ros.ros`` is ROS-free and can be used, tested and benchmarked without rclpy.
"""

__version__ = "0.1.0"
