"""Model runtime: the manifest, the local model folder, verified downloads and ONNX sessions."""
