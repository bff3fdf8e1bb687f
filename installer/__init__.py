"""Developer tools: model exporters (PyTorch checkpoints to the ONNX contracts) and bundling."""
