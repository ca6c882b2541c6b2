"""The model zoo: how each model is built, exported, fed and scored.

Each kind module provides `OUTPUTS` (output names), `load_for_export()`, `calibration_feeds()`, `evaluation_feeds()` and
`compare(reference_run, candidate_run)`; `onnx_path(kind)` exports at first use into the cache.
"""

import importlib
from pathlib import Path

from onnxcomp.cache import cache_dir
from onnxcomp.errors import OnnxcompError
from onnxcomp.tools.export import export_module

EXPORT_VERSION = 2  # bump when exports change, so caches never serve a stale file
KINDS = {"digits": "digits", "minilm": "minilm", "smollm2": "smollm2", "digits_res": "digits_res"}


def get(kind: str):
    if kind not in KINDS:
        raise OnnxcompError(f"unknown model kind {kind!r} (choose from {', '.join(sorted(KINDS))})")
    return importlib.import_module(f"{__name__}.{KINDS[kind]}")


def onnx_path(kind: str) -> Path:
    """The fp32 ONNX export of a zoo model, built into the cache at first use."""
    module = get(kind)
    version = getattr(module, "EXPORT_VERSION", EXPORT_VERSION)  # a kind may bump its own
    path = cache_dir("models") / f"{kind}_v{version}.onnx"
    if not path.exists():
        model, inputs, dynamic_axes = module.load_for_export()
        export_module(model, inputs, path, dynamic_axes, output_names=list(module.OUTPUTS))
    return path


def tokenizer(kind: str):
    module = get(kind)
    return module.tokenizer() if hasattr(module, "tokenizer") else None
