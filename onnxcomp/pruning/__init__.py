"""Structured pruning on the ONNX graph: dependency groups (`groups`) and their application (`apply`)."""
