"""sha256 of every preset's output on the zoo models: the check that a refactor changed no byte.

    .venv/bin/python benchmarks/preset_hashes.py --out /tmp/before.json              # all models
    .venv/bin/python benchmarks/preset_hashes.py --models digits,minilm --out /tmp/after.json
    .venv/bin/python benchmarks/preset_hashes.py --compare /tmp/before.json /tmp/after.json

Each row compresses the cached fp32 export of a zoo model (`onnxcomp.models.onnx_path`) with a
preset and the model's built-in calibration data through the Python API, with the calibration
cache off (statistics are recomputed by the code under test), and records the sha256 of the
written file. Besides the presets, variants exercise the other output formats and schemes
(weight-only `qdq`/`custom`, asymmetric, group 32; int8 symmetric activations, entropy). The
digits CNN is trained at first use: compare runs that share one `$ONNXCOMP_CACHE`.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ONNXCOMP_SPEED_GUARD", "0")  # methods are compared here, not this machine's speed guard

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent))

MODELS = ("digits", "minilm", "smollm2")
PRESETS = (
    "canonicalize",
    "int8",
    "w8a8-smoothquant",
    "w4a16-rtn",
    "w8a16",
    "w4a16-awq",
    "w4a16-gptq",
    "w4a16-awq-gptq",
)
WEIGHT_ONLY = "quantize_weight_only"
VARIANTS = {  # name → (preset, options); cheap ones on every model, the GPTQ/AWQ ones off SmolLM2
    "w4a16-rtn/qdq": ("w4a16-rtn", {WEIGHT_ONLY: {"format": "qdq"}}),
    "w4a16-rtn/qdq-asym": ("w4a16-rtn", {WEIGHT_ONLY: {"format": "qdq", "symmetric": False}}),
    "w4a16-rtn/custom": ("w4a16-rtn", {WEIGHT_ONLY: {"format": "custom"}}),
    "w4a16-rtn/asym-g32": ("w4a16-rtn", {WEIGHT_ONLY: {"symmetric": False, "group_size": 32}}),
    "w8a16/qdq": ("w8a16", {WEIGHT_ONLY: {"format": "qdq"}}),
    "int8/int8-entropy": ("int8", {"quantize_qdq": {"activation_dtype": "int8", "method": "entropy"}}),
    "w4a16-gptq/qdq-asym": ("w4a16-gptq", {f"{WEIGHT_ONLY}_gptq": {"format": "qdq", "symmetric": False}}),
    "w4a16-awq/asym-g64": ("w4a16-awq", {f"{WEIGHT_ONLY}_awq": {"symmetric": False, "group_size": 64}}),
}
HEAVY_VARIANTS = {"w4a16-gptq/qdq-asym", "w4a16-awq/asym-g64"}


def rows_for(model: str) -> list[tuple[str, str, dict]]:
    rows = [(preset, preset, {}) for preset in PRESETS]
    for name, (preset, options) in VARIANTS.items():
        if model != "smollm2" or name not in HEAVY_VARIANTS:
            rows.append((name, preset, options))
    return rows


def run(models: list[str], only: set[str] | None) -> dict:
    import onnxcomp
    from onnxcomp import models as zoo

    results = {}
    for kind in models:
        source = zoo.onnx_path(kind)
        feeds = zoo.get(kind).calibration_feeds()
        tokenizer = zoo.tokenizer(kind)
        for name, preset, options in rows_for(kind):
            if only and name not in only:
                continue
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "out.onnx"
                try:
                    onnxcomp.compress(
                        source, preset, feeds, output=out, options=options, tokenizer=tokenizer, use_cache=False
                    )
                    sha = hashlib.sha256(out.read_bytes()).hexdigest()
                except Exception as exc:  # a row that fails is recorded, not fatal
                    sha = f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            key = f"{kind}/{name}"
            results[key] = sha
            print(f"{key:40s} {sha[:16]}  {time.perf_counter() - start:7.1f} s", flush=True)
    return results


def compare(before: dict, after: dict) -> int:
    bad = 0
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, "missing"), after.get(key, "missing")
        same = a == b and not a.startswith(("error", "missing"))
        bad += not same
        print(f"{'same' if same else 'DIFF':4s}  {key:40s} {a[:16]}  {b[:16]}")
    print(f"{len(set(before) | set(after)) - bad} identical, {bad} different or missing")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    parser.add_argument("--rows", help="comma-separated row names (presets or variants) to run; default all")
    parser.add_argument("--out", help="write {model/row: sha256} JSON here")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two JSON files and exit")
    args = parser.parse_args()
    if args.compare:
        return compare(*(json.loads(Path(p).read_text()) for p in args.compare))
    results = run(args.models.split(","), set(args.rows.split(",")) if args.rows else None)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
