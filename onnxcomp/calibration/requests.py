"""Typed statistic requests, and the store that answers them.

A pass says what it needs to know about the activations (`CompressionPass.statistic_requests`);
the pass manager collects every request of a step in one pass over the calibration data
(`onnxcomp.calibration.runner.collect`) and puts the answers in `Statistics`:

- `RangeRequest(tensor)`: running min/max, a 2048-bin |x| histogram and per-channel |x| maxima
  (`TensorStats`): activation ranges (every calibration method), SmoothQuant's maxima;
- `RowsRequest(tensor, rows)`: up to `rows` vectors of the last axis spread evenly over the data
  (SmoothQuant's α search, AWQ's scale and clip searches);
- `GramRequest(tensor)`: H = 2XᵀX/rows over the last axis, on the model as it is (the one-shot
  Hessian; no preset asks for it yet: sensitivity proxies and pruning refits will).

Staged Grams (each stage measured on the model with earlier stages already quantized) cannot be
collected up front: `onnxcomp.calibration.staged.StagedHessians` serves them stage by stage.
"""

from dataclasses import dataclass, field

import numpy as np

from onnxcomp.calibration.collectors import TensorStats
from onnxcomp.errors import OnnxcompError


@dataclass(frozen=True, order=True)
class RangeRequest:
    tensor: str


@dataclass(frozen=True, order=True)
class RowsRequest:
    tensor: str
    rows: int


@dataclass(frozen=True, order=True)
class GramRequest:
    tensor: str


Request = RangeRequest | RowsRequest | GramRequest


@dataclass
class Statistics:
    """Answers to requests, by tensor name; later collections overwrite earlier ones."""

    ranges: dict[str, TensorStats] = field(default_factory=dict)
    rows: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    grams: dict[str, np.ndarray] = field(default_factory=dict)

    def update(self, other: "Statistics") -> None:
        self.ranges.update(other.ranges)
        self.rows.update(other.rows)
        self.grams.update(other.grams)

    def missing(self, requests: list[Request]) -> list[Request]:
        have = {RangeRequest: self.ranges, RowsRequest: self.rows, GramRequest: self.grams}
        return [r for r in requests if _key(r) not in have[type(r)]]

    def require(self, requests: list[Request], who: str) -> None:
        """Raise one line naming the first request not answered (the pass cannot run without it)."""
        missing = self.missing(requests)
        if missing:
            what = {RangeRequest: "calibration statistics", RowsRequest: "calibration rows", GramRequest: "Gram matrix"}
            raise OnnxcompError(
                f"pass {who!r}: {what[type(missing[0])]} missing for tensor {missing[0].tensor!r} "
                "(no calibrate step or pass manager collected them)"
            )


def _key(request: Request):
    return (request.tensor, request.rows) if isinstance(request, RowsRequest) else request.tensor
