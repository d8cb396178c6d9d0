"""The network as torch code (train time only): encoders, gated fusion, head, losses, training, ONNX export."""
