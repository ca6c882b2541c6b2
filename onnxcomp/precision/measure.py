"""Measured sensitivity: the model's output error with some weights replaced, in ONNX Runtime.

One session of the float model serves every measurement: the weights that may be replaced are
declared as graph inputs as well as initializers (allowed since IR 4), so ONNX Runtime uses the
stored value unless a run feeds another. A run per unit feeds that unit's quantized weights and
compares the outputs with the float model's on the same feeds (`OutputComparison`).
"""

import numpy as np
import onnx_ir as ir

from onnxcomp.algorithms.sensitivity import kl_from_log_probs, log_softmax, relative_squared_error
from onnxcomp.runtime import ir_session, ort_session


def holdout_feeds(reader, count: int, sequence: int) -> list[dict]:
    """The last `count` feeds of a calibration reader, 2-D integer (token) inputs cut to `sequence`."""
    feeds = list(reader)[-count:]
    return [{k: (v[:, :sequence] if v.ndim == 2 and v.dtype.kind in "iu" else v) for k, v in f.items()} for f in feeds]


def output_metric(output_names: list[str]) -> str:
    """'kl' for language-model logits (an output named *logits*), else 'relative_l2'."""
    return "kl" if any("logits" in name for name in output_names) else "relative_l2"


class OutputComparison:
    """Error of a model's outputs against reference outputs on the same feeds: mean KL of next-token
    distributions for logits, else relative squared L2. Positions a feed's `attention_mask` marks
    as padding ([batch, sequence], matching the output's first two axes) are left out: their values
    mean nothing and can dominate the error."""

    def __init__(self, output_names: list[str], feeds: list[dict], reference_outputs: list[list[np.ndarray]]):
        self.output_names = output_names
        self.metric = output_metric(output_names)
        self.feeds = feeds
        self.reference = [
            [log_softmax(x) if self._is_kl(n) else x for n, x in zip(output_names, outputs)]
            for outputs in reference_outputs
        ]

    def _is_kl(self, name: str) -> bool:
        return self.metric == "kl" and "logits" in name

    def error(self, outputs_per_feed: list[list[np.ndarray]]) -> float:
        values = []
        for feed, reference, actual in zip(self.feeds, self.reference, outputs_per_feed):
            mask = feed.get("attention_mask")
            for name, ref, act in zip(self.output_names, reference, actual):
                if mask is not None and mask.ndim == 2 and ref.shape[:2] == mask.shape:
                    ref, act = ref[mask.astype(bool)], act[mask.astype(bool)]
                if self._is_kl(name):
                    values.append(kl_from_log_probs(ref, act))
                elif self.metric == "relative_l2":
                    values.append(relative_squared_error(ref, act))
        return float(np.mean(values))


class OverrideRunner:
    """Runs `feeds` through the float model with any of `names` (initializers) fed instead."""

    def __init__(self, model: ir.Model, names: list[str], feeds: list[dict]):
        self.session = ir_session(model, overridable=names, spinning=False)
        names = [o.name for o in self.session.get_outputs()]
        self.comparison = OutputComparison(names, feeds, [self.session.run(None, feed) for feed in feeds])
        self.metric = self.comparison.metric

    def error(self, overrides: dict[str, np.ndarray]) -> float:
        """Mean output error over the feeds with `overrides` fed (KL in nats, or relative squared L2)."""
        return self.comparison.error([self.session.run(None, {**f, **overrides}) for f in self.comparison.feeds])


def model_error(reference_model, candidate_model, feeds: list[dict]) -> tuple[float, str]:
    """Mean output error of `candidate_model` against `reference_model` (paths, bytes or protos) on
    `feeds`; one session at a time (the reference's outputs are kept, not its weights)."""
    reference = ort_session(reference_model, spinning=False)
    names = [o.name for o in reference.get_outputs()]
    comparison = OutputComparison(names, feeds, [reference.run(None, feed) for feed in feeds])
    del reference
    candidate = ort_session(candidate_model, spinning=False)
    return comparison.error([candidate.run(None, feed) for feed in feeds]), comparison.metric
