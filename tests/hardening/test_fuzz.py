"""A short seeded fuzz run (tests/hardening/fuzzing.py): every mutated model and random recipe
either compresses or fails with OnnxcompError, within 10 s. The long run is benchmarks/fuzz.py."""

import logging

from tests.hardening.fuzzing import fuzz


def test_short_seeded_fuzz_run_has_no_findings(tmp_cache):
    logging.disable(logging.WARNING)  # onnx_ir logs every dangling input it meets; not a failure
    try:
        findings = fuzz(400, seed=20261130)
    finally:
        logging.disable(logging.NOTSET)
    assert not findings, "\n".join(f"case {f.case}: {f.what} → {f.error}" for f in findings)
