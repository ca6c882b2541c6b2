"""Exact parameter counts of the tensors dependency groups cut.

Groups overlap in weights: a layer that consumes one group's channels may produce the next
group's (conv2 reads conv1's filters and owns its own), so "parameters per channel" is not a
constant — removing an input row of a weight whose outputs were already cut frees fewer entries.
`ParamCounter` tracks each cut tensor's current shape so the global selection pays the true
price of every channel, and counts the parameters a choice of kept channels removes.
"""

import numpy as np
import onnx_ir as ir

from onnxcomp.pruning.groups import PruneGroup


class ParamCounter:
    def __init__(self, groups: list[PruneGroup]):
        self.initial: dict[ir.Value, list[int]] = {}
        self.cuts: list[list[tuple[ir.Value, int, int]]] = []
        for group in groups:
            cuts = [(p.weight, p.out_axis, group.blocks.get(p, group.block)) for p in group.producers]
            cuts += [(p.bias, 0, group.blocks.get(p, group.block)) for p in group.producers if p.bias is not None]
            cuts += [(c.weight, c.in_axis, group.repeat) for c in group.consumers]
            cuts += [(s.value, s.axis, 1) for s in group.constants]
            for value, _, _ in cuts:
                self.initial.setdefault(value, list(value.const_value.shape))
            self.cuts.append(cuts)
        self.dims = {value: list(dims) for value, dims in self.initial.items()}
        self.channels = [g.channels for g in groups]

    @property
    def total(self) -> int:
        """Parameters in every tensor some group cuts (each counted once)."""
        return int(sum(np.prod(d, dtype=np.int64) for d in self.initial.values()))

    def cost(self, g: int) -> int:
        """Parameters freed by removing one more channel of group `g` now."""
        total = 0
        for value, axis, repeat in self.cuts[g]:
            dims = self.dims[value]
            total += repeat * int(np.prod(dims, dtype=np.int64)) // max(dims[axis], 1)
        return total

    def remove(self, g: int) -> None:
        for value, axis, repeat in self.cuts[g]:
            self.dims[value][axis] -= repeat

    def removed_for(self, counts: list[int]) -> int:
        """Parameters removed when group g keeps `counts[g]` channels (from the initial shapes)."""
        dims = {value: list(d) for value, d in self.initial.items()}
        for g, count in enumerate(counts):  # a tensor may be cut by two groups (a Concat's consumer)
            for value, axis, repeat in self.cuts[g]:
                dims[value][axis] -= (self.channels[g] - count) * repeat
        return self.total - int(sum(np.prod(d, dtype=np.int64) for d in dims.values()))
