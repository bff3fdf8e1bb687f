"""Model runtime: ONNX sessions (and, later, the registry and verified downloads)."""
