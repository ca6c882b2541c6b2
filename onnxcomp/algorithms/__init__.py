"""Compression math as pure numpy functions: no onnx, onnx_ir or onnxruntime import (ruff enforces it).

quant_math (int8 scales, biases), blockwise (int4/int8 blocks, packing), smoothing (SmoothQuant),
awq (activation-aware scales), gptq (GPTQ's quantization given a Hessian).
"""
