"""A 2-D Conv's input as the rows its weight multiplies: im2col patches, for recovery statistics.

A Conv with weight [O, C, kh, kw] computes at each output pixel y = W·p + b, with p the patch of
C·kh·kw input values in the weight's flattened order (channel, then kernel row and column). So a
Conv consumer is a linear layer on patches: channel c owns rows c·kh·kw … c·kh·kw + kh·kw − 1,
and the least-squares refit of `onnxcomp.algorithms.refit` applies to it unchanged, with the
patches' second moment in place of the input's.
"""

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir


@dataclass(frozen=True)
class ConvGeometry:
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    dilations: tuple[int, int]

    @property
    def size(self) -> int:
        """Patch rows per input channel (kh·kw)."""
        return self.kernel[0] * self.kernel[1]

    def rows(self, x: np.ndarray) -> np.ndarray:
        """[N, C, H, W] → [N·Ho·Wo, C·kh·kw] patches (zero padding as the Conv pads)."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        top, left, bottom, right = self.pads
        x = np.pad(np.asarray(x, dtype=np.float32), ((0, 0), (0, 0), (top, bottom), (left, right)))
        n, c, h, w = x.shape
        ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
        cols = np.empty((n, c, kh, kw, ho, wo), dtype=np.float32)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = x[
                    :, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw
                ]
        return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * ho * wo, c * kh * kw)


def conv_geometry(node: ir.Node, weight: np.ndarray) -> ConvGeometry | None:
    """The patch geometry of a plain 2-D Conv (group 1, explicit or no padding), else None."""
    attrs = node.attributes

    def ints(name, default):
        attr = attrs.get(name)
        return tuple(int(v) for v in attr.value) if attr is not None else default

    auto_pad, group = attrs.get("auto_pad"), attrs.get("group")
    if weight.ndim != 4 or (group is not None and int(group.value) != 1):
        return None
    if auto_pad is not None and auto_pad.value not in ("NOTSET", b"NOTSET"):
        return None
    kernel = tuple(weight.shape[2:])
    if ints("kernel_shape", kernel) != kernel:
        return None
    return ConvGeometry(kernel, ints("strides", (1, 1)), ints("pads", (0, 0, 0, 0)), ints("dilations", (1, 1)))
