"""Graph helpers over onnx_ir: model I/O, one view of a linear layer, per-op channel rules,
structural patterns (linear groups, norms, tied tables) and scale folding."""
