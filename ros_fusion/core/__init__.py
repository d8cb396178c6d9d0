"""ROS-free, numpy-only core: types, calibration, frames, time, box ops."""
