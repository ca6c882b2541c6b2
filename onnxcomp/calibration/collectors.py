"""Bounded per-tensor activation statistics and the range each calibration method derives.

A `TensorStats` keeps a running min/max, per-channel (last axis) absolute maxima, and a
histogram of |x| with a fixed number of bins. Its bin width is a power of two; when a batch
exceeds the covered range the width doubles and neighbouring bins merge, which is exact. So
memory is O(bins + channels) per tensor whatever the amount of calibration data.
"""

import math

import numpy as np

NUM_BINS = 2048
METHODS = ("minmax", "percentile", "entropy", "mse")


class TensorStats:
    def __init__(self, num_bins: int = NUM_BINS):
        self.num_bins = num_bins
        self.min = math.inf
        self.max = -math.inf
        self.width = 0.0  # bin width of the |x| histogram, a power of two once data arrived
        self.hist = np.zeros(num_bins, dtype=np.int64)
        self.channel_absmax: np.ndarray | None = None  # max |x| per index of the last axis
        self._channels_consistent = True
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32)
        if x.size == 0:
            return
        if not np.isfinite(x).all():
            raise ValueError("non-finite values (NaN or Inf)")
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        absx = np.abs(x)
        if x.ndim >= 1 and self._channels_consistent:
            chan = absx.reshape(-1, x.shape[-1]).max(axis=0)
            if self.channel_absmax is None:
                self.channel_absmax = chan
            elif self.channel_absmax.shape == chan.shape:
                self.channel_absmax = np.maximum(self.channel_absmax, chan)
            else:  # the last axis is dynamic (e.g. a sequence axis): no channel statistics
                self.channel_absmax, self._channels_consistent = None, False
        top = float(absx.max())
        if self.width == 0.0:
            self.width = 2.0 ** math.ceil(math.log2(max(top, 1e-30) / self.num_bins))
        while top >= self.width * self.num_bins:
            self.hist = self.hist.reshape(-1, 2).sum(axis=1)
            self.hist = np.concatenate([self.hist, np.zeros(self.num_bins // 2, dtype=np.int64)])
            self.width *= 2.0
        scaled = absx.reshape(-1)  # in place from here on: one float32 and one int32 temporary
        scaled *= np.float32(1.0 / self.width)  # a power of two: exact
        np.minimum(scaled, self.num_bins - 1, out=scaled)
        self.hist += np.bincount(scaled.astype(np.int32), minlength=self.num_bins)
        self.count += x.size

    # -- persistence (calibration cache) --------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {
            "minmax": np.array([self.min, self.max], dtype=np.float64),
            "width": np.array([self.width, self.count], dtype=np.float64),
            "hist": self.hist,
        }
        if self.channel_absmax is not None:
            out["channel_absmax"] = self.channel_absmax
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "TensorStats":
        stats = cls(len(arrays["hist"]))
        stats.min, stats.max = (float(v) for v in arrays["minmax"])
        stats.width, count = (float(v) for v in arrays["width"])
        stats.count = int(count)
        stats.hist = np.asarray(arrays["hist"], dtype=np.int64)
        stats.channel_absmax = arrays.get("channel_absmax")
        return stats

    # -- ranges ---------------------------------------------------------------------------
    def range(
        self, method: str = "minmax", percentile: float = 99.999, scheme: str = "asymmetric"
    ) -> tuple[float, float]:
        """The (lo, hi) range to quantize to, always containing 0.

        A threshold c on |x| clips the range to [max(min, -c), min(max, c)]. `scheme` says how
        that range is then quantized, which sets the step size entropy and mse optimize for:
        "asymmetric" spreads 255 steps over [lo, hi] (uint8), "symmetric" puts 127 steps on
        each side of 0 (int8).
        """
        if self.count == 0:
            raise ValueError("no data collected")
        if scheme not in ("asymmetric", "symmetric"):
            raise ValueError(f"unknown scheme {scheme!r} (asymmetric or symmetric)")
        if method == "minmax":
            threshold = max(abs(self.min), abs(self.max))
        elif method == "percentile":
            threshold = self._percentile_threshold(percentile)
        elif method == "entropy":
            threshold = self._entropy_threshold(scheme)
        elif method == "mse":
            threshold = self._mse_threshold(scheme)
        else:
            raise ValueError(f"unknown calibration method {method!r} (choose from {', '.join(METHODS)})")
        return self._clipped(threshold)

    def _clipped(self, threshold):
        """(lo, hi) for a threshold (scalar or array)."""
        lo = np.minimum(0.0, np.maximum(self.min, -threshold))
        hi = np.maximum(0.0, np.minimum(self.max, threshold))
        return (float(lo), float(hi)) if np.ndim(threshold) == 0 else (lo, hi)

    def _step(self, thresholds: np.ndarray, scheme: str) -> np.ndarray:
        """Quantization step of the range each threshold gives."""
        lo, hi = self._clipped(thresholds)
        if scheme == "asymmetric":
            return np.maximum(hi - lo, 1e-30) / 255.0
        return np.maximum(np.maximum(-lo, hi), 1e-30) / 127.0

    def _percentile_threshold(self, percentile: float) -> float:
        cdf = np.cumsum(self.hist) / self.hist.sum()
        index = int(np.searchsorted(cdf, percentile / 100.0))
        return min((index + 1) * self.width, max(abs(self.min), abs(self.max)))

    def _used_bins(self) -> int:
        nonzero = np.nonzero(self.hist)[0]
        return int(nonzero[-1]) + 1 if len(nonzero) else 1

    def _entropy_threshold(self, scheme: str) -> float:
        """Threshold minimizing KL(reference || quantized) over the |x| histogram (TensorRT's method).

        The quantized distribution merges the first i bins into as many levels as the range of
        that threshold has steps on [0, c].
        """
        hist = self.hist[: self._used_bins()].astype(np.float64)
        used = len(hist)
        first = min(128, used)
        stride = max(1, (used - first) // 256)
        candidates = np.arange(first, used + 1, stride)
        thresholds = candidates * self.width
        levels = np.maximum(1, np.rint(thresholds / self._step(thresholds, scheme))).astype(np.int64)
        best, best_kl = used, math.inf
        for i, quant_bins in zip(candidates, levels):
            quant_bins = min(int(quant_bins), int(i))
            ref = hist[:i].copy()
            ref[-1] += hist[i:].sum()
            sliced = hist[:i]
            group = (np.arange(i) * quant_bins) // i
            nonzero = sliced > 0
            sums = np.bincount(group, weights=sliced, minlength=quant_bins)
            counts = np.bincount(group, weights=nonzero, minlength=quant_bins)
            expanded = np.where(nonzero, sums[group] / np.maximum(counts[group], 1), 0.0)
            p = ref / ref.sum()
            q = expanded / max(expanded.sum(), 1e-30)
            mask = p > 0
            kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
            if kl < best_kl:
                best, best_kl = i, kl
        return float(best * self.width)

    def _mse_threshold(self, scheme: str) -> float:
        """Threshold minimizing expected squared error: rounding (Δ²/12) inside, clipping outside."""
        hist = self.hist[: self._used_bins()].astype(np.float64)
        centers = (np.arange(len(hist)) + 0.5) * self.width
        candidates = np.unique(np.linspace(1, len(hist), num=min(len(hist), 512)).astype(np.int64)) * self.width
        inside = centers[None, :] <= candidates[:, None]
        step = self._step(candidates, scheme)
        rounding = (inside * hist[None, :]).sum(axis=1) * step**2 / 12.0
        clipping = ((~inside) * hist[None, :] * (centers[None, :] - candidates[:, None]) ** 2).sum(axis=1)
        return float(candidates[int(np.argmin(rounding + clipping))])


class GramAccumulator:
    """Streams H = 2 XᵀX / rows over batches of X [..., K] (float64, bounded: K × K per input)."""

    def __init__(self, k: int):
        self.sum = np.zeros((k, k), dtype=np.float64)
        self.rows = 0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.sum.shape[0])
        self.sum += x.T @ x
        self.rows += len(x)

    @property
    def hessian(self) -> np.ndarray:
        return 2.0 * self.sum / max(self.rows, 1)
