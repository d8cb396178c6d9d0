"""Inference backends and the FusionPipeline. Lands with the network/pipeline issues."""
