"""SmoothQuant on the real models (slow): exact equivalence in fp32, then W8A8 accuracy targets."""

import numpy as np
import pytest

import onnxcomp
from onnxcomp import models
from onnxcomp.passes.recipes import CANONICALIZE
from onnxcomp.runtime import ort_session, runner

pytestmark = pytest.mark.slow


def smoothed_only(kind, feeds, **options):
    recipe = [*CANONICALIZE, ("calibrate", {}), ("smoothquant", options)]
    return onnxcomp.compress(models.onnx_path(kind), recipe, feeds)


def report_of(result, name="smoothquant"):
    return next(p["details"] for p in result.report["passes"] if p["pass"] == name)


# Exactness and structure need few calibration rows and no α search (w8a8-smoothquant's test runs
# it on SmolLM2): SmolLM2 gets its first 2 windows (one feed) and α = 0.5.
@pytest.mark.parametrize("kind, options, windows", [("minilm", {"fallback": "mul"}, None), ("smollm2", {}, 2)])
def test_smoothing_alone_keeps_the_real_model(kind, options, windows):
    module, path = models.get(kind), models.onnx_path(kind)
    feeds = module.calibration_feeds() if windows is None else module.calibration_feeds(windows)
    result = smoothed_only(kind, feeds, **options)
    reference, smoothed = ort_session(path), ort_session(result.model)
    for feed in module.evaluation_feeds()[:2]:
        expected, got = reference.run(None, feed)[0], smoothed.run(None, feed)[0]
        assert np.linalg.norm(got - expected) <= 1e-4 * np.linalg.norm(expected)  # measured 8.8e-7 on SmolLM2
    report = report_of(result)
    producers = [g["producer"] for g in report["smoothed"]]
    if kind == "smollm2":
        # 30 blocks: Q/K/V and gate/up from RMSNorm, O from V through the grouped-query repeat,
        # down from up through the gated product; plus the LM head after the final norm.
        assert len(producers) == 30 * 4 + 1 and report["not_smoothed"] == []
        assert sum("Expand" in p for p in producers) == 30 and sum(p.startswith("RMSNorm") for p in producers) == 61
    else:
        # BERT is post-norm: the norm output also feeds the residual, so Q/K/V and FFN-in get a Mul;
        # the attention output folds into V; FFN-out (after GELU) gets a Mul.
        assert producers.count("inserted Mul") == 18 and len(producers) == 24


@pytest.mark.llm
def test_smollm2_w8a8_smoothquant_meets_the_perplexity_target(smollm2):
    plain = smollm2.compress("int8", {"quantize_qdq": {"method": "percentile"}})  # int8's default, spelled out
    plain_ratio = smollm2.ratio(plain.model)
    smooth_ratio = smollm2.ratio(smollm2.compress("w8a8-smoothquant").model)
    assert smooth_ratio <= 1.15, (smooth_ratio, plain_ratio)  # target; measured 1.066 on these windows
    assert plain_ratio - smooth_ratio >= 0.5 * (plain_ratio - 1.0)  # closes at least half the gap


def test_minilm_w8a8_smoothquant_cosine():
    module, path = models.get("minilm"), models.onnx_path("minilm")
    feeds = module.calibration_feeds()
    reference = runner(ort_session(path))
    plain = module.compare(reference, runner(ort_session(onnxcomp.compress(path, "int8", feeds).model)))
    smooth = module.compare(reference, runner(ort_session(onnxcomp.compress(path, "w8a8-smoothquant", feeds).model)))
    assert smooth["mean_cosine"] >= 0.99
    assert smooth["mean_cosine"] >= plain["mean_cosine"] - 1e-4, (smooth, plain)  # never worse than plain W8A8


def test_minilm_w8a8_mixed_meets_issue_12s_accuracy_on_held_out_sentences():
    """Issue 12's MiniLM targets for `w8a8-mixed`: cosine ≥ 0.998 and nearest-neighbour agreement ≥
    0.95 against fp32 on the 256 evaluation sentences (measured 0.99940 / 0.969 with GPTQ-rounded
    weights, 0.99924 / 0.973 with nearest rounding; one sentence moves NN by 0.004)."""
    module, path = models.get("minilm"), models.onnx_path("minilm")
    result = onnxcomp.compress(path, "w8a8-mixed", module.calibration_feeds())
    metric = module.compare(runner(ort_session(path)), runner(ort_session(result.model)))
    assert metric["mean_cosine"] >= 0.998 and metric["nn_agreement"] >= 0.95, metric
    layers = next(p for p in result.report["passes"] if p["pass"] == "quantize_qdq")["details"]["layers"]
    assert sum(layer.get("weight_rounding") == "gptq" for layer in layers) == len(layers) >= 24
