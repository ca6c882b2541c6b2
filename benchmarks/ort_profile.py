"""Where an ONNX model's time goes in ONNX Runtime CPU: kernel time per operator type.

    .venv/bin/python benchmarks/ort_profile.py MODEL.onnx [MODEL2.onnx ...] --runs 40 --sequence 128

Each model runs in its own session (2 intra-op threads, spinning off, as `measure_latency` times
them) on a synthetic batch-1 feed: first `--runs` timed runs without profiling (the wall-clock
median), then the same number with ONNX Runtime's profiler on, whose per-node kernel times are
summed by operator type (milliseconds per run and share of the total).
"""

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxcomp.ir.graph import input_specs  # noqa: E402
from onnxcomp.runtime import ort_session, session_options, synthetic_feed  # noqa: E402


def profile(path: str, runs: int, sequence: int, top: int) -> None:
    feed = synthetic_feed(input_specs(onnx.load(path, load_external_data=False)), 1, sequence)
    session = ort_session(path, spinning=False)
    for _ in range(5):
        session.run(None, feed)
    wall = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        wall.append(time.perf_counter() - start)
    options = session_options(spinning=False)
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="onnxcomp-profile-") as folder:
        options.profile_file_prefix = str(Path(folder) / "ort")
        profiled = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            profiled.run(None, feed)
        events = json.loads(Path(profiled.end_profiling()).read_text())
    per_op = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values())
    print(f"{path}: wall median {np.median(wall) * 1e3:.2f} ms; kernels {total / runs / 1e3:.2f} ms per run")
    for op, micros in per_op.most_common(top):
        print(f"  {op:28s} {micros / runs / 1e3:7.2f} ms  {micros / total:6.1%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--sequence", type=int, default=128, help="tokens per feed for text models")
    parser.add_argument("--top", type=int, default=10, help="operator types listed per model")
    args = parser.parse_args()
    if args.runs < 1 or args.sequence < 1 or args.top < 1:
        parser.error("--runs, --sequence and --top must be at least 1")
    missing = [m for m in args.models if not Path(m).is_file()]
    if missing:
        parser.error(f"no such model file: {', '.join(missing)}")
    for path in args.models:
        profile(path, args.runs, args.sequence, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
