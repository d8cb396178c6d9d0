"""Inference backends, the model bundle, the FusionPipeline and the FusionEngine that feeds it."""
