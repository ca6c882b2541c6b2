"""SmolLM2-135M (slow): export fidelity, perplexity metric, int8 recipe on a real LLM."""

import numpy as np
import pytest

import onnxcomp
from onnxcomp import models
from onnxcomp.runtime import ort_session, runner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return models.get("smollm2"), models.onnx_path("smollm2")


def test_export_matches_torch(smollm2):
    import torch

    module, path = smollm2
    model, _, _ = module.load_for_export()
    feed = module.evaluation_feeds()[0]
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
    got = ort_session(path).run(None, feed)[0]
    assert np.abs(got - expected).max() < 1e-3  # measured 8.4e-5 on logits of magnitude ~20


def test_tied_embedding_stored_once(smollm2):
    _, path = smollm2
    assert path.stat().st_size < 135e6 * 4 * 1.05  # 134.5 M parameters, not 134.5 + 28.3 M


def test_int8_every_calibration_method_runs_and_stays_close(smollm2):
    module, path = smollm2
    feeds, evaluation = module.calibration_feeds(), module.evaluation_feeds()[:10]
    reference = runner(ort_session(path))
    for method in ("minmax", "percentile", "entropy", "mse"):
        result = onnxcomp.compress(path, "int8", feeds, options={"quantize_qdq": {"method": method}})
        metric = module.compare(reference, runner(ort_session(result.model)), evaluation)
        assert 5 < metric["perplexity_reference"] < 60, metric
        assert metric["ratio"] < RATIO_BOUND[method], (method, metric)


# Regression bounds: measured int8/fp32 perplexity ratios on the first 10 evaluation windows
# (percentile 2.48, entropy 11.6, mse 1.41; minmax 1.80 on all 40) plus ~20 % margin. Plain
# per-tensor static activations lose this much on an LLM; SmoothQuant is what closes the gap.
RATIO_BOUND = {"minmax": 2.2, "percentile": 3.0, "entropy": 14.0, "mse": 1.7}
