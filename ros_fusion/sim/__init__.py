"""Synthetic world and sensor models: training data, demo bags, fault scenarios."""
