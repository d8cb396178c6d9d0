"""The network as torch code (train time only). Lands with the network issue."""
