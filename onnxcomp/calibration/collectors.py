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
        idx = np.minimum((absx.ravel() / self.width).astype(np.int64), self.num_bins - 1)
        self.hist += np.bincount(idx, minlength=self.num_bins)
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
    def range(self, method: str = "minmax", percentile: float = 99.999, levels: int | None = None) -> tuple[float, float]:
        """The (lo, hi) range to quantize to, always containing 0.

        `levels` is the number of quantization steps on the positive side (127 for int8
        symmetric, 255 for non-negative data in uint8); by default derived from the data's sign.
        """
        if self.count == 0:
            raise ValueError("no data collected")
        if levels is None:
            levels = 255 if self.min >= 0 else 127
        if method == "minmax":
            threshold = max(abs(self.min), abs(self.max))
        elif method == "percentile":
            threshold = self._percentile_threshold(percentile)
        elif method == "entropy":
            threshold = self._entropy_threshold(min(levels + 1, 128 if levels < 255 else 256))
        elif method == "mse":
            threshold = self._mse_threshold(levels)
        else:
            raise ValueError(f"unknown calibration method {method!r} (choose from {', '.join(METHODS)})")
        lo = min(0.0, max(self.min, -threshold))
        hi = max(0.0, min(self.max, threshold))
        return lo, hi

    def _percentile_threshold(self, percentile: float) -> float:
        cdf = np.cumsum(self.hist) / self.hist.sum()
        index = int(np.searchsorted(cdf, percentile / 100.0))
        return min((index + 1) * self.width, max(abs(self.min), abs(self.max)))

    def _used_bins(self) -> int:
        nonzero = np.nonzero(self.hist)[0]
        return int(nonzero[-1]) + 1 if len(nonzero) else 1

    def _entropy_threshold(self, quant_bins: int) -> float:
        """Threshold minimizing KL(reference || quantized) over the |x| histogram (TensorRT's method)."""
        hist = self.hist[: self._used_bins()].astype(np.float64)
        used = len(hist)
        if used <= quant_bins:
            return used * self.width
        best, best_kl = used, math.inf
        stride = max(1, (used - quant_bins) // 256)
        for i in range(quant_bins, used + 1, stride):
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
        return best * self.width

    def _mse_threshold(self, levels: int) -> float:
        """Threshold minimizing expected squared error: rounding (Δ²/12) inside, clipping outside."""
        hist = self.hist[: self._used_bins()].astype(np.float64)
        centers = (np.arange(len(hist)) + 0.5) * self.width
        candidates = np.unique(np.linspace(1, len(hist), num=min(len(hist), 512)).astype(np.int64)) * self.width
        inside = centers[None, :] <= candidates[:, None]
        step = candidates / levels
        rounding = (inside * hist[None, :]).sum(axis=1) * step**2 / 12.0
        clipping = ((~inside) * hist[None, :] * (centers[None, :] - candidates[:, None]) ** 2).sum(axis=1)
        return float(candidates[int(np.argmin(rounding + clipping))])
