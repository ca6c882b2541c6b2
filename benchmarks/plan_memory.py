"""Peak memory and time of the sensitivity analysis (`calibrate` + `plan_precision`) on a zoo model.

    ONNXCOMP_CACHE=$PWD/.cache .venv/bin/python benchmarks/plan_memory.py                 # SmolLM2-135M
    .venv/bin/python benchmarks/plan_memory.py --model minilm --json

Runs `onnxcomp.compress` with the canonicalizing passes, `calibrate` and `plan_precision` (no
quantization) on the model's built-in calibration data, sampling this process's resident memory
(VmRSS) every 0.25 s. Reports the peak up to the end of `plan_precision` (the analysis: issue 12
bounds it by 4 GiB and 10 minutes for SmolLM2) and over the whole call, which then serializes the
still-float model and measures its error, and each pass's seconds.
"""

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("ONNXCOMP_SPEED_GUARD", "0")

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent))

import onnxcomp  # noqa: E402
from onnxcomp import models as zoo  # noqa: E402
from onnxcomp.passes import PASSES  # noqa: E402

RECIPE = [
    ("fold_constants", {}),
    ("simplify", {}),
    ("fold_batchnorm", {}),
    ("remove_unused", {}),
    ("calibrate", {}),
    ("plan_precision", {}),
]
GIB = 2**30


def rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


class Sampler(threading.Thread):
    """Resident memory every `interval` seconds: the peak so far, and the peak at a mark."""

    def __init__(self, interval: float = 0.25):
        super().__init__(daemon=True)
        self.interval, self.peak, self.marks = interval, 0, {}

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def mark(self, name: str) -> None:
        self.peak = max(self.peak, rss_bytes())
        self.marks[name] = self.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", choices=sorted(zoo.KINDS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    source = str(zoo.onnx_path(args.model))
    feeds = zoo.get(args.model).calibration_feeds()
    sampler = Sampler()
    plan_pass = PASSES["plan_precision"]
    analysis = plan_pass.call

    def call_and_mark(self, model):
        result = analysis(self, model)
        sampler.mark("analysis")
        return result

    plan_pass.call = call_and_mark
    sampler.start()
    start = time.perf_counter()
    result = onnxcomp.compress(source, RECIPE, feeds, use_cache=False)
    sampler.mark("whole call")
    row = {
        "model": args.model,
        "peak_rss_gib_analysis": round(sampler.marks["analysis"] / GIB, 3),
        "peak_rss_gib_whole_call": round(sampler.marks["whole call"] / GIB, 3),
        "seconds": round(time.perf_counter() - start, 1),
        "pass_seconds": {e["pass"]: e.get("seconds") for e in result.report["passes"]},
    }
    if args.json:
        print(json.dumps(row))
        return
    print(f"{args.model}: peak RSS {row['peak_rss_gib_analysis']:.2f} GiB up to the end of plan_precision, ", end="")
    print(f"{row['peak_rss_gib_whole_call']:.2f} GiB for the whole call; {row['seconds']:.0f} s")
    for name, seconds in row["pass_seconds"].items():
        print(f"  {name:<16} {seconds} s")


if __name__ == "__main__":
    main()
