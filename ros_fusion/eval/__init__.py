"""Metrics, robustness matrix, latency and reports. Lands with the evaluation issue."""
