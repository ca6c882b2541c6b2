"""prune_structured: remove whole channels (CNN filters, MLP neurons) and shrink the ONNX graph.

Plan: `onnxcomp.pruning.groups.find_groups` finds the dependency groups (a producer's output
channels, its consumers' input rows, per-channel constants and flatten shapes on the way); groups
of the kinds asked for (`prune`: "heads", "ffn", "channels") are scored per channel (`importance`:
"magnitude", "wanda", "flap" or "obs", see `onnxcomp.algorithms.importance`; "obs" ranks a group's
channels by the order greedy structured OBS removes them, each removal re-solving the rest by least
squares), standardized per group and ranked globally; the lowest go until `sparsity` × the groups'
parameters are removed (`multiple`: kept counts rounded up to a multiple, e.g. 8; the default
"auto" keeps Conv filters in multiples of 16 — ONNX Runtime's CPU Conv runs in NCHWc blocks of 16
channels on AVX-512 (8 on AVX2), and a filter count off the block drops the layers to the plain
layout, which made the pruned digits CNN 1.2× slower than its input — and other groups in ones;
`allocation: uniform`, the default, takes the same fraction from every group instead: one-shot, it kept more
accuracy than the global ranking on the digits CNN and more cosine on MiniLM; see the README).
`prune` defaults to "ffn,channels": heads cost MiniLM more accuracy per parameter than MLP neurons
in our runs; `head_sparsity` (uniform allocation) fixes the fraction of every attention group's
heads removed and leaves the rest of the target to the other groups, and `head_layers` < 1 gives
those heads' cut to that fraction of the attention groups only, the ones whose cut moves the
residual stream least (O's output error after the refit over the residual's energy). Under
grouped-query attention the query heads go in equal numbers per KV head (K/V stay whole), or with
`kv_groups: true` whole KV groups go: a channel is one KV head with its query heads, K/V lose that
head's columns and the Expand's KV count shrinks. Apply:
`onnxcomp.pruning.apply.apply_group` slices the initializers.

Recovery (`recovery`): "refit" solves each consumer's kept rows and a bias change by least squares
against the unpruned layer's output on calibration statistics, "bias" only moves the removed
channels' mean contribution into the bias, "none" slices. Statistics are the consumer inputs' second
moment and mean (`onnxcomp.pruning.sequential.input_moments`: one pass over the data on the model
before pruning, positions a feed's `attention_mask` marks as padding left out; one-shot: a layer's
refit sees the unpruned model's inputs). With `sequential: true` each group's consumers are refit on
the inputs of the model with the groups before already pruned, against the unpruned model's inputs
(`onnxcomp.pruning.sequential`: one more pass over the data per group). A Conv consumer's channels are
scored by magnitude (its input rows are patches, not the last axis); with `conv_refit` (default) it
is refit like the others on its input's im2col patches (`onnxcomp.pruning.patches`: kh·kw rows per
channel). A consumer reading a Concat or Split of the channels is sliced only. A residual stream
(producers joined at residual Adds) is scored by each layer's standardized scores summed
(`imp.layer_sum`).

Requires: calibration data unless `importance` is "magnitude" and `recovery` is "none". Guarantees:
the model is smaller (fewer channels in weights, biases and shapes), passes the checker with strict
shape inference and computes the same function on the kept channels; `sparsity` outside [0, 1) or
above what keeps one channel (or `multiple`) per group is refused with the maximum. The report lists
per group the channels kept and the consumer's relative output error on the calibration statistics
before and after recovery, and every skipped producer with its reason.
"""

import numpy as np
import onnx_ir as ir

from onnxcomp.algorithms import importance as imp
from onnxcomp.algorithms.refit import Moments, bias_compensation, least_squares, relative_error
from onnxcomp.passes.base import CompressionPass
from onnxcomp.pruning.apply import apply_group, consumer_rows
from onnxcomp.pruning.groups import PruneGroup, find_groups
from onnxcomp.pruning.params import ParamCounter
from onnxcomp.pruning.patches import conv_geometry
from onnxcomp.pruning.sequential import SequentialMoments, input_moments

KINDS = ("heads", "ffn", "channels")
IMPORTANCE = ("flap", "wanda", "magnitude", "obs")
RECOVERY = ("refit", "bias", "none")
ALLOCATION = ("global", "uniform")
CONV_BLOCK = 16  # channels per NCHWc block of ONNX Runtime's CPU Conv (AVX-512; a multiple of AVX2's 8)


def _kinds(value) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip() for item in items if item.strip()]


def _nearest(group: PruneGroup, min_keep: int, multiple: int, fraction: float) -> int:
    """Channels kept when `fraction` of them go, the count rounded to the nearest multiple."""
    return max(min_keep, int(round((1 - fraction) * group.channels / multiple)) * multiple)


def _residual(consumer) -> str | None:
    """The residual stream a linear's output is added to: the other operand of the first Add
    after it that is not a constant (a bias Add is passed), or None."""
    value = consumer.node.outputs[0]
    for _ in range(3):
        uses = list(value.uses())
        if len(uses) != 1 or uses[0].node.op_type != "Add":
            return None
        node = uses[0].node
        other = node.inputs[1 - uses[0].idx]
        if other is None or other.const_value is None:
            return other.name if other is not None else None
        value = node.outputs[0]
    return None


def _per_kv_head(group: PruneGroup, keep: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Under grouped-query attention, the same number of query heads (the best-scored) per KV
    head; `len(keep)` is a multiple of `kv_heads` (the selection's rounding)."""
    if group.kv_heads == 1:
        return keep
    size, per = group.channels // group.kv_heads, len(keep) // group.kv_heads
    best = [
        j * size + np.argsort(-scores[j * size : (j + 1) * size], kind="stable")[:per] for j in range(group.kv_heads)
    ]
    return np.sort(np.concatenate(best))


def _every_part(group: PruneGroup, keep: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Every part of a channel Split keeps at least its best-scored channel (no empty tensor)."""
    for split in group.splits:
        for lo, hi in split.bounds:
            if not np.any((keep >= lo) & (keep < hi)):
                keep = np.sort(np.append(keep, lo + int(np.argmax(scores[lo:hi]))))
    return keep


class PruneStructured(CompressionPass):
    name = "prune_structured"
    options = {
        "sparsity": 0.2,
        "prune": "ffn,channels",
        "importance": "flap",
        "recovery": "refit",
        "damp": 0.01,
        "multiple": "auto",
        "allocation": "uniform",
        "sequential": True,
        "head_sparsity": None,
        "head_layers": 1.0,
        "conv_refit": True,
        "kv_groups": False,
    }

    def validate_options(self) -> None:
        o = self.opts
        s = o["sparsity"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1:
            raise self.fail(f"sparsity must be a number in [0, 1), not {s!r}")
        unknown = [k for k in _kinds(o["prune"]) if k not in KINDS]
        if unknown or not _kinds(o["prune"]):
            raise self.fail(f"prune must list some of {', '.join(KINDS)}, not {o['prune']!r}")
        if o["importance"] not in IMPORTANCE:
            raise self.fail(f"importance must be one of {', '.join(IMPORTANCE)}, not {o['importance']!r}")
        if o["recovery"] not in RECOVERY:
            raise self.fail(f"recovery must be one of {', '.join(RECOVERY)}, not {o['recovery']!r}")
        if not isinstance(o["kv_groups"], bool):
            raise self.fail(f"kv_groups must be true or false, not {o['kv_groups']!r}")
        if not isinstance(o["conv_refit"], bool):
            raise self.fail(f"conv_refit must be true or false, not {o['conv_refit']!r}")
        if not isinstance(o["sequential"], bool):
            raise self.fail(f"sequential must be true or false, not {o['sequential']!r}")
        if o["allocation"] not in ALLOCATION:
            raise self.fail(f"allocation must be one of {', '.join(ALLOCATION)}, not {o['allocation']!r}")
        m = o["multiple"]
        if m != "auto" and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise self.fail(f"multiple must be a positive integer or 'auto', not {m!r}")
        h = o["head_sparsity"]
        if h is not None and (isinstance(h, bool) or not isinstance(h, (int, float)) or not 0 <= h < 1):
            raise self.fail(f"head_sparsity must be a number in [0, 1), not {h!r}")
        if h is not None and o["allocation"] != "uniform":
            raise self.fail("head_sparsity needs allocation uniform (global ranks heads with the rest)")
        layers = o["head_layers"]
        if isinstance(layers, bool) or not isinstance(layers, (int, float)) or not 0 < layers <= 1:
            raise self.fail(f"head_layers must be a number in (0, 1], not {layers!r}")
        if layers < 1 and h is None:
            raise self.fail("head_layers needs head_sparsity (the fraction of heads those layers lose)")
        d = o["damp"]
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < 1:
            raise self.fail(f"damp must be a number in [0, 1), not {d!r}")

    @property
    def needs_data(self) -> bool:
        return self.opts["importance"] != "magnitude" or self.opts["recovery"] != "none"

    def _groups(self, model: ir.Model) -> tuple[list[PruneGroup], list[PruneGroup]]:
        kinds = set(_kinds(self.opts["prune"]))
        groups = find_groups(model, kv_groups=self.opts["kv_groups"])
        chosen = [g for g in groups if not g.reason and g.kind in kinds]
        return chosen, [g for g in groups if g.reason]

    def _moments(self, consumer) -> Moments | None:
        """E[xxᵀ] and E[x] of the consumer's input over the calibration data, or None (Conv, or a
        consumer reading a Concat or Split of the channels: sliced only)."""
        if consumer.node.op_type == "Conv" or consumer.node in self._windowed:
            return None
        return self.stats.get(consumer.node.inputs[0].name)

    @staticmethod
    def _rows(group: PruneGroup, consumer) -> np.ndarray:
        """The consumer's input rows of the group's channels, [channels, …] (zeros for the channels
        a Split part does not carry)."""
        window = group.consumer_windows.get(consumer.node)
        w = np.moveaxis(consumer.array, consumer.in_axis, 0)
        if window is None:
            return w.reshape(group.channels, -1)
        every = np.arange(group.channels)
        rows = consumer_rows(group, every, window)
        if window.concat is not None:  # the group's rows sit after the earlier inputs'
            offset = int(sum(int(v.shape[window.axis]) for v in window.concat.inputs[: window.index]))
            rows = (offset + every)[:, None] * group.repeat + np.arange(group.repeat)[None, :]
            return w[rows.reshape(-1)].reshape(group.channels, -1)
        out = np.zeros((group.channels, group.repeat * int(np.prod(w.shape[1:]))), dtype=w.dtype)
        out[window.lo : window.hi] = w[rows].reshape(window.hi - window.lo, -1)
        return out

    def _scores(self, group: PruneGroup, limit: int | None = None) -> np.ndarray:
        """Channel scores (higher = keep); "obs" orders only the first `limit` channels to go."""
        c, method = group.channels, self.opts["importance"]
        total = np.zeros(c)
        used = False
        if group.residual:
            return self._residual_scores(group)
        if method == "obs":
            stats = [(k.weight_kn(), m.second, m.mean) for k in group.consumers if (m := self._moments(k)) is not None]
            if stats:
                return imp.obs(stats, group.repeat, float(self.opts["damp"]), limit)
        elif method != "magnitude":
            for consumer in group.consumers:
                moments = self._moments(consumer)
                if moments is None:
                    continue
                w = consumer.weight_kn()
                diag = np.diag(moments.second)
                rows = imp.wanda_sp(w, diag) if method == "wanda" else imp.flap(w, diag - moments.mean**2)
                total += rows.reshape(c, group.repeat).sum(axis=1)
                used = True
        if used:
            return total
        pieces = [np.moveaxis(p.array, p.out_axis, 0).reshape(c, -1) for p in group.producers]
        pieces += [self._rows(group, k) for k in group.consumers]
        return imp.magnitude(pieces)

    def _residual_scores(self, group: PruneGroup) -> np.ndarray:
        """A residual stream's channels: each layer's scores standardized on their own and summed
        (`imp.layer_sum`): producers by their filters' L2 norm, consumers with statistics by
        FLAP (Wanda-sp under "wanda"), other consumers by their input rows' L2 norm. Under
        "magnitude" every layer counts its L2 norm; "obs" takes FLAP's per-layer terms (the stream
        has many consumers, Conv ones without statistics, so no single refit orders it)."""
        c, method = group.channels, self.opts["importance"]
        layers = [imp.magnitude([np.moveaxis(p.array, p.out_axis, 0).reshape(c, -1)]) for p in group.producers]
        for consumer in group.consumers:
            moments = self._moments(consumer) if method != "magnitude" else None
            if moments is None:
                layers.append(imp.magnitude([self._rows(group, consumer)]))
                continue
            w, diag = consumer.weight_kn(), np.diag(moments.second)
            rows = imp.wanda_sp(w, diag) if method == "wanda" else imp.flap(w, diag - moments.mean**2)
            layers.append(rows.reshape(c, group.repeat).sum(axis=1))
        return imp.layer_sum(layers)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        o = self.opts
        groups, skipped = self._groups(model)
        self._windowed = {node for g in groups for node in g.consumer_windows}
        self._views, self._geometry = {}, {}  # Conv consumers' patch statistics (conv_refit)
        skipped_report = [{"producer": g.name, "kind": g.kind, "reason": g.reason} for g in skipped]
        self.details = {
            "groups": [],
            "skipped": skipped_report,
            "importance": o["importance"],
            "recovery": o["recovery"],
        }
        if not groups:
            self.details["note"] = "no prunable group"
            return ir.passes.PassResult(model, modified=False)
        counter = ParamCounter(groups)
        # a head is its own unit; under grouped-query attention as many per KV head
        multiples = [g.kv_heads if g.kind == "heads" else self._multiple(g) for g in groups]
        min_keep = [min(m, g.channels) for m, g in zip(multiples, groups)]
        total = counter.total
        target = int(round(o["sparsity"] * total))
        most = counter.removed_for(min_keep)
        if target > most:
            raise self.fail(
                f"sparsity {o['sparsity']} would remove a whole layer; the maximum is {most / total:.4f} "
                f"(each of the {len(groups)} groups keeps at least one channel, or one `multiple` of them)"
            )
        self.stats = {}
        if self.needs_data:
            if self.context.calibration is None:
                raise self.fail(f"importance {o['importance']!r} and recovery {o['recovery']!r} need calibration data")
            names = self._refit_inputs(groups)
            if o["head_layers"] < 1:  # the residual streams the attention groups' O outputs join
                names += [r for g in groups if g.kind == "heads" for c in g.consumers if (r := _residual(c))]
            self.stats = input_moments(model, names, self.context.calibration, self._views) if names else {}
        self._cut_heads = None  # attention groups that lose head_sparsity of their heads (None: all)
        if o["head_layers"] < 1:
            heads = {i: imp.standardize(self._scores(g)) for i, g in enumerate(groups) if g.kind == "heads"}
            self._cut_heads = self._head_layers(groups, heads, multiples, min_keep)
        if o["allocation"] == "global":
            scores = [imp.standardize(self._scores(g)) for g in groups]
            keeps = imp.select_global(scores, counter.cost, target, min_keep, multiples, counter.remove).keep
        else:  # counts first: OBS need not order the channels that stay
            counts = self._uniform(groups, counter, target, min_keep, multiples)
            scores = [imp.standardize(self._scores(g, g.channels - n)) for g, n in zip(groups, counts)]
            keeps = [np.sort(np.argsort(-s, kind="stable")[:n]) for s, n in zip(scores, counts)]
        keeps = [_every_part(g, _per_kv_head(g, k, s), s) for g, k, s in zip(groups, keeps, scores)]
        removed = counter.removed_for([len(k) for k in keeps])
        sequential = None
        if o["sequential"] and o["recovery"] != "none" and self._refit_inputs(groups):
            if self.context.calibration is None:
                raise self.fail("sequential recovery needs calibration data")
            sequential = SequentialMoments(model, self._refit_inputs(groups), self.context.calibration, self._views)
        for group, keep in zip(groups, keeps):
            moments = None
            if sequential is not None and len(keep) < group.channels and self._refit_inputs([group]):
                moments = sequential.moments(model, self._refit_inputs([group]))
            self.details["groups"].append(self._prune(group, keep, moments))
        self.details.update(
            prunable_params=total, removed_params=removed, sparsity=round(removed / total, 4) if total else 0.0
        )
        return ir.passes.PassResult(model, modified=removed > 0)

    def _uniform(self, groups, counter, target: int, min_keep: list[int], multiples) -> list[int]:
        """Channels kept per group: the same fraction of every group's channels, the fraction
        bisected until the exact parameter count reaches `target`. Kept counts are rounded up to
        `multiples`, except grouped-query heads, rounded to the nearest multiple of their KV
        heads (rounding 9 query heads up to 3 per KV head would keep them all below 1/3). With
        `head_sparsity`, attention groups lose that fraction of their heads (nearest count) and
        only the other groups' fraction is bisected."""
        heads = self.opts["head_sparsity"]

        def counts(ratio: float) -> list[int]:
            out = []
            for i, (g, m, multiple) in enumerate(zip(groups, min_keep, multiples)):
                fixed = heads is not None and g.kind == "heads"
                if fixed and self._cut_heads is not None and i not in self._cut_heads:
                    out.append(g.channels)
                    continue
                if g.kv_heads > 1 or fixed:
                    out.append(_nearest(g, m, multiple, heads if fixed else ratio))
                    continue
                kept = max(m, int(round((1 - ratio) * g.channels)))
                out.append(min(g.channels, -(-kept // multiple) * multiple))
            return out

        if counter.removed_for(counts(0.0)) > target:
            raise self.fail(f"head_sparsity {heads} alone removes more than sparsity {self.opts['sparsity']}")
        if counter.removed_for(counts(1.0)) < target:
            most = counter.removed_for(counts(1.0)) / counter.total
            raise self.fail(f"with head_sparsity {heads} the maximum sparsity is {most:.4f}")
        low, high = 0.0, 1.0
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (mid, high) if counter.removed_for(counts(mid)) < target else (low, mid)
        return counts(high)

    def _head_layers(self, groups, scores, multiples, min_keep) -> set[int]:
        """The `head_layers` fraction of attention groups whose cut (`head_sparsity` of their heads,
        the best-scored, O refit) moves the residual stream least: E‖Δo‖² / E‖r‖², with Δo O's
        output error after the refit and r the residual O's output is added to (O's own output
        when there is none)."""
        o = self.opts
        heads = [i for i, g in enumerate(groups) if g.kind == "heads"]
        cost = {}
        for i in heads:
            g = groups[i]
            count = _nearest(g, min_keep[i], multiples[i], o["head_sparsity"])
            keep = _per_kv_head(g, np.sort(np.argsort(-scores[i], kind="stable")[:count]), scores[i])
            cost[i] = 0.0
            for consumer in g.consumers:
                moments = self._moments(consumer)
                if moments is None:
                    raise self.fail(f"head_layers needs statistics of {consumer.name}'s input")
                w, rows = consumer.weight_kn().astype(np.float64), consumer_rows(g, keep)
                energy = float(np.sum(w * (moments.second @ w)))
                residual = self.stats.get(_residual(consumer) or "")
                scale = float(np.trace(residual.second)) if residual is not None else energy
                kept, delta = least_squares(w, moments, rows, float(o["damp"]))
                cost[i] += relative_error(w, moments, rows, kept, delta) * energy / max(scale, 1e-30)
        chosen = sorted(heads, key=lambda i: (cost[i], i))[: max(1, int(round(o["head_layers"] * len(heads))))]
        self.details["head_layers"] = [
            {"group": groups[i].name, "cost": round(cost[i], 6), "cut": i in chosen} for i in heads
        ]
        return set(chosen)

    def _multiple(self, group: PruneGroup) -> int:
        """Kept channels are a multiple of this: the option, or under "auto" Conv filters in
        blocks of 16 (ONNX Runtime's NCHWc layout) and everything else in ones."""
        if self.opts["multiple"] != "auto":
            return self.opts["multiple"]
        return CONV_BLOCK if group.kind == "channels" else 1

    def _refit_inputs(self, groups: list[PruneGroup]) -> list[str]:
        """The statistic keys of the consumers that are refit: their input's name, or for a Conv
        (with `conv_refit`) a key for its input's im2col patches (`self._views`)."""
        return [key for g in groups for c in g.consumers if c.node not in g.consumer_windows and (key := self._key(c))]

    def _key(self, consumer) -> str | None:
        if consumer.node.op_type != "Conv":
            return consumer.node.inputs[0].name
        if not self.opts["conv_refit"] or self.opts["recovery"] == "none":  # only the refit reads patches
            return None
        geometry = conv_geometry(consumer.node, consumer.array)
        if geometry is None:
            return None
        key = f"{consumer.node.inputs[0].name}@patches:{consumer.name}"
        self._views[key] = (consumer.node.inputs[0].name, geometry.rows)
        self._geometry[consumer.node] = geometry
        return key

    def _refit_moments(self, consumer, sequential: dict | None) -> Moments | None:
        """A consumer's statistics for its refit (a Conv's on its patches, with `conv_refit`)."""
        if consumer.node.op_type != "Conv":
            moments = self._moments(consumer)
            key = consumer.node.inputs[0].name
        else:
            key = self._key(consumer)
            moments = self.stats.get(key) if key is not None else None
        if sequential is not None and moments is not None:
            moments = sequential[key]
        return moments

    def _prune(self, group: PruneGroup, keep: np.ndarray, sequential: dict | None = None) -> dict:
        entry = {"group": group.name, "kind": group.kind, "channels": group.channels, "kept": int(len(keep))}
        if len(keep) == group.channels:
            return entry
        new = {}
        errors = []
        for consumer in group.consumers:
            moments = self._refit_moments(consumer, sequential)
            if moments is None:
                continue
            rows = consumer_rows(group, keep)
            if consumer.node.op_type == "Conv":  # a linear layer on patches: kh·kw rows per channel
                size = self._geometry[consumer.node].size
                w = consumer.array.reshape(consumer.n, -1).T.astype(np.float64)
                rows = (rows[:, None] * size + np.arange(size)[None, :]).reshape(-1)
            else:
                w = consumer.weight_kn().astype(np.float64)
            before = relative_error(w, moments, rows, w[rows], np.zeros(w.shape[1]))
            if self.opts["recovery"] == "none":
                errors.append((before, before))
                continue
            if self.opts["recovery"] == "bias":
                kept, delta = w[rows], bias_compensation(w, moments, rows)
            else:
                kept, delta = least_squares(w, moments, rows, float(self.opts["damp"]))
            errors.append((before, relative_error(w, moments, rows, kept, delta)))
            new[consumer] = (kept, delta)
        apply_group(group, keep, new)
        if errors:
            entry["error_before"] = round(float(np.mean([e[0] for e in errors])), 6)
            entry["error_after"] = round(float(np.mean([e[1] for e in errors])), 6)
        return entry

    @classmethod
    def summary(cls, details: dict) -> str | None:
        if not details:
            return None
        groups = details.get("groups", [])
        line = (
            f"prune_structured: removed {details.get('removed_params', 0)} of {details.get('prunable_params', 0)} "
            f"prunable parameters ({100 * details.get('sparsity', 0.0):.1f}%) in {len(groups)} groups "
            f"({details['importance']} importance, {details['recovery']} recovery)"
        )
        errs = [(g["error_before"], g["error_after"]) for g in groups if "error_before" in g]
        if errs:
            line += f"; consumer output error {np.mean([e[0] for e in errs]):.4f} → {np.mean([e[1] for e in errs]):.4f}"
        if details.get("skipped"):
            line += f"; {len(details['skipped'])} producers left alone (reasons in the report)"
        if details.get("note"):
            line += f"; {details['note']}"
        return line
