"""Measured sensitivity: the model's output error with some weights replaced, in ONNX Runtime.

One session of the float model serves every measurement: the weights that may be replaced are
declared as graph inputs as well as initializers (allowed since IR 4), so ONNX Runtime uses the
stored value unless a run feeds another. A run per unit feeds that unit's quantized weights and
compares the outputs with the float model's on the same feeds.
"""

import numpy as np
import onnx
import onnx_ir as ir

from onnxcomp.algorithms.sensitivity import kl_from_log_probs, log_softmax, relative_squared_error
from onnxcomp.runtime import ort_session


def holdout_feeds(reader, count: int, sequence: int) -> list[dict]:
    """The last `count` feeds of a calibration reader, 2-D integer (token) inputs cut to `sequence`."""
    feeds = list(reader)[-count:]
    return [{k: (v[:, :sequence] if v.ndim == 2 and v.dtype.kind in "iu" else v) for k, v in f.items()} for f in feeds]


def output_metric(output_names: list[str]) -> str:
    """'kl' for language-model logits (an output named *logits*), else 'relative_l2'."""
    return "kl" if any("logits" in name for name in output_names) else "relative_l2"


class OverrideRunner:
    """Runs `feeds` through the float model with any of `names` (initializers) fed instead."""

    def __init__(self, model: ir.Model, names: list[str], feeds: list[dict]):
        proto = ir.to_proto(model)
        by_name = {init.name: init for init in proto.graph.initializer}
        declared = {i.name for i in proto.graph.input}
        for name in names:
            if name not in declared:
                init = by_name[name]
                proto.graph.input.append(onnx.helper.make_tensor_value_info(name, init.data_type, list(init.dims)))
        self.session = ort_session(proto.SerializeToString(), spinning=False)
        del proto
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metric = output_metric(self.output_names)
        self.feeds = feeds
        self.reference = [self._prepared(self.session.run(None, feed)) for feed in feeds]

    def _prepared(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        """Reference outputs, logits as log-probabilities (computed once)."""
        return [log_softmax(x) if self._is_kl(name) else x for name, x in zip(self.output_names, outputs)]

    def _is_kl(self, name: str) -> bool:
        return self.metric == "kl" and "logits" in name

    def error(self, overrides: dict[str, np.ndarray]) -> float:
        """Mean output error over the feeds with `overrides` fed (KL in nats, or relative squared L2)."""
        values = []
        for feed, reference in zip(self.feeds, self.reference):
            actual = self.session.run(None, {**feed, **overrides})
            for name, ref, act in zip(self.output_names, reference, actual):
                if self._is_kl(name):
                    values.append(kl_from_log_probs(ref, act))
                elif self.metric == "relative_l2":
                    values.append(relative_squared_error(ref, act))
        return float(np.mean(values))


def model_error(reference_model, candidate_model, feeds: list[dict]) -> tuple[float, str]:
    """Mean output error of `candidate_model` against `reference_model` (paths, bytes or protos) on `feeds`."""
    reference = ort_session(reference_model, spinning=False)
    candidate = ort_session(candidate_model, spinning=False)
    names = [o.name for o in reference.get_outputs()]
    metric = output_metric(names)
    values = []
    for feed in feeds:
        for name, ref, act in zip(names, reference.run(None, feed), candidate.run(None, feed)):
            if metric == "kl" and "logits" in name:
                values.append(kl_from_log_probs(log_softmax(ref), act))
            elif metric == "relative_l2":
                values.append(relative_squared_error(ref, act))
    return float(np.mean(values)), metric
