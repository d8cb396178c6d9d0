"""Thin rclpy adapters: conversions, nodes, QoS, parameters, diagnostics, node plan."""
