"""SmolLM2-135M (slow): export fidelity, perplexity metric, int8 recipe on a real LLM."""

import numpy as np
import pytest

from onnxcomp.runtime import ort_session

pytestmark = pytest.mark.slow


def test_export_matches_torch(smollm2):
    import torch

    model, _, _ = smollm2.module.load_for_export()
    feed = smollm2.evaluation[0]
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
    got = ort_session(smollm2.path).run(None, feed)[0]
    assert np.abs(got - expected).max() < 1e-3  # measured 8.4e-5 on logits of magnitude ~20


def test_tied_embedding_stored_once(smollm2):
    assert smollm2.path.stat().st_size < 135e6 * 4 * 1.05  # 134.5 M parameters, not 134.5 + 28.3 M


def test_int8_every_calibration_method_runs_and_stays_close(smollm2):
    assert 5 < smollm2.reference < 60
    for method in ("minmax", "percentile", "entropy", "mse"):
        result = smollm2.compress("int8", {"quantize_qdq": {"method": method}})
        ratio = smollm2.ratio(result.model)
        assert ratio < RATIO_BOUND[method], (method, ratio)


# Regression bounds: measured int8/fp32 perplexity ratios on tests/conftest.py's windows (2026-12-01:
# minmax 1.71, percentile 2.14, entropy 12.5, mse 1.38) plus ~20 % margin. Plain per-tensor static
# activations lose this much on an LLM; SmoothQuant is what closes the gap.
RATIO_BOUND = {"minmax": 2.05, "percentile": 2.6, "entropy": 15.0, "mse": 1.66}
