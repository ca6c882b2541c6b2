"""The long fuzz run: N seeded cases of tests/hardening/fuzzing.py; prints every finding (an
exception other than OnnxcompError, or a case over the timeout) and a summary line.

    .venv/bin/python benchmarks/fuzz.py --cases 10000 --seed 0
"""

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.hardening.fuzzing import run_case  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a case counts as a hang")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    start, findings, slowest = time.perf_counter(), [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for case in range(args.cases):
            t = time.perf_counter()
            finding = run_case(case, args.seed, Path(tmp), args.timeout)
            slowest = max(slowest, time.perf_counter() - t)
            if finding is not None:
                findings.append(finding)
                print(f"case {finding.case}: {finding.what} → {finding.error}", flush=True)
            if (case + 1) % 1000 == 0:
                print(f"{case + 1} cases, {len(findings)} findings, {time.perf_counter() - start:.0f} s", flush=True)
    hangs = sum(f.error.startswith("hang") for f in findings)
    print(
        f"seed {args.seed}: {args.cases} cases, {len(findings) - hangs} uncaught exceptions, {hangs} hangs "
        f"(timeout {args.timeout} s), slowest case {slowest:.2f} s, {time.perf_counter() - start:.0f} s in all"
    )
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
