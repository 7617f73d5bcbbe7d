"""stopcal-convert's helpers: reading torch.save archives and safetensors files without torch
(torchzip, st_reader), mapping the reference pipeline's checkpoints onto the stopcal model file
(mapping), and a PyTorch model of the reference built from checkpoint tensors (torch_reference,
used by --verify and the tests; it is the only module here that imports torch)."""
