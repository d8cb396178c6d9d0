"""ros_fusion: camera, LiDAR, radar and IMU fused into 3D obstacles for ROS 2."""

__version__ = "0.1.0"
