"""Peak memory of `onnxcomp.compress` against the issue's budget: 3× the fp32 model size plus
the runtime's own footprint (a plain ONNX Runtime session running the same calibration batches).

    .venv/bin/python benchmarks/compress_memory.py [--model minilm|digits] [--json]

Each side runs in a fresh process and reports (peak RSS − RSS after its imports), so import
costs (torch is never imported by either) do not count for or against either side.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("ONNXCOMP_SPEED_GUARD", "0")  # methods are compared here, not this machine's speed guard

RUNTIME = """
import glob, resource, sys, numpy as np, onnxruntime as ort
base = int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) * 1024
session = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])
for path in sorted(glob.glob(sys.argv[2] + '/*.npz')):
    session.run(None, dict(np.load(path)))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
"""

COMPRESS = """
import resource, sys, onnxruntime, onnxcomp
base = int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) * 1024
onnxcomp.compress(sys.argv[1], 'int8', sys.argv[2], output=sys.argv[3], use_cache=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
"""


def measure(code: str, *args: str) -> int:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", choices=["minilm", "digits"])
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    from onnxcomp import models

    path = models.onnx_path(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(tmp) / "calib"
        calib.mkdir()
        for i, feed in enumerate(models.get(args.model).calibration_feeds()):
            np.savez(calib / f"batch_{i:03d}.npz", **feed)
        runtime = measure(RUNTIME, str(path), str(calib))
        added = measure(COMPRESS, str(path), str(calib), str(Path(tmp) / "out.onnx"))
    size = path.stat().st_size
    budget = 3 * size + runtime
    result = {
        "model": args.model,
        "model_bytes": size,
        "runtime_footprint_bytes": runtime,
        "budget_bytes": budget,
        "compress_added_bytes": added,
        "within_budget": added <= budget,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        mb = lambda n: f"{n / 2**20:.0f} MB"  # noqa: E731
        print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
        print(f"{args.model}: fp32 file {mb(size)}; ONNX Runtime running the calibration batches: +{mb(runtime)}")
        print(
            f"budget 3 x file + runtime = {mb(budget)}; compress (int8, cache off) added {mb(added)} "
            f"= {added / budget:.2f} x budget -> {'within' if added <= budget else 'OVER'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
