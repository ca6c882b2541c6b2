"""Peak RSS and time of `compress` on a synthetic model past protobuf's 2 GB limit.

Builds (once) a stack of 4096x4096 MatMul/Gemm layers with external data into
$ONNXCOMP_CACHE/large_model/ (never committed), then runs each recipe in a fresh process and reports
its peak RSS (`os.wait4`'s ru_maxrss), wall time and the ratio of peak RSS to the model's size.

    nice -n 10 .venv/bin/python benchmarks/large_model.py [--layers 20] [--recipes canonicalize,int8,w4a16-rtn]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxcomp.cache import cache_dir  # noqa: E402
from tests.hardening import large_models  # noqa: E402

os.environ.setdefault("ONNXCOMP_SPEED_GUARD", "0")  # methods are compared here, not this machine's speed guard

CHILD = """
import sys
sys.path.insert(0, {repo!r})
import onnxcomp
from tests.hardening import large_models
recipe, model, output, dim = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
calibration = large_models.feeds(dim, count=2) if recipe == "int8" else None
onnxcomp.compress(model, recipe, calibration, output=output, use_cache=False)
"""


def model_bytes(path: Path) -> int:
    data = Path(f"{path}.data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=20, help="each layer: one MatMul and one Gemm weight")
    parser.add_argument("--recipes", default="canonicalize,int8,w4a16-rtn")
    args = parser.parse_args()
    folder = cache_dir("large_model")
    path = folder / f"stack_{args.dim}x{args.layers}.onnx"
    if not path.exists() or not Path(f"{path}.data").exists():
        start = time.perf_counter()
        large_models.build(path, args.dim, args.layers)
        print(f"built {path} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    size = model_bytes(path)
    rows = []
    repo = str(Path(__file__).resolve().parent.parent)
    for recipe in args.recipes.split(","):
        with tempfile.TemporaryDirectory(dir=folder) as out_dir:
            output = Path(out_dir) / f"out.{recipe}.onnx"
            start = time.perf_counter()
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD.format(repo=repo), recipe, str(path), str(output), str(args.dim)]
            )
            _, status, usage = os.wait4(child.pid, 0)
            seconds = time.perf_counter() - start
            peak = usage.ru_maxrss * 1024
            written = model_bytes(output) if status == 0 else None
            rows.append(
                {
                    "recipe": recipe,
                    "exit_status": os.waitstatus_to_exitcode(status),
                    "model_bytes": size,
                    "output_bytes": written,
                    "seconds": round(seconds, 1),
                    "peak_rss_bytes": peak,
                    "peak_rss_over_model": round(peak / size, 3),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'recipe':<14}{'model GiB':>10}{'output GiB':>11}{'seconds':>9}{'peak RSS GiB':>13}{'RSS/model':>10}")
    for r in rows:
        out = f"{r['output_bytes'] / 2**30:.2f}" if r["output_bytes"] else "failed"
        print(
            f"{r['recipe']:<14}{r['model_bytes'] / 2**30:>10.2f}{out:>11}{r['seconds']:>9.1f}"
            f"{r['peak_rss_bytes'] / 2**30:>13.2f}{r['peak_rss_over_model']:>10.2f}"
        )


if __name__ == "__main__":
    main()
