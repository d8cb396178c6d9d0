"""Evaluation: nuScenes-style metrics, bag and shard evaluation, robustness matrix, latency, reports, bench."""
