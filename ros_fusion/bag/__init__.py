"""MCAP / rosbag2 read, write, replay and record."""
