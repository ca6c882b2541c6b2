"""plan_precision: measure each layer's sensitivity and choose its scheme under a budget (analysis only).

For every unit (`onnxcomp.precision.units`: the linears reading one input — Q/K/V, gate/up — with a
tied embedding table counted in its LM head's unit) and every candidate scheme (int4/int8 blocks,
group 32/64/128, symmetric or not; int8 per channel; `fp16`, stored by `store_fp16`; or `keep` in float):
- the stored bytes, from round-to-nearest codes in the emitter's layout;
- the proxy tr(ΔWᵀ H ΔW), H the Gram of the unit's calibration input (`GramRequest`);
- measured sensitivity: the model's output error in ONNX Runtime with only this unit at the
  `reference` scheme, on the last `measure_feeds` calibration feeds cut to `measure_sequence`
  (mean KL of next-token distributions for logits, relative squared L2 otherwise), for every unit
  (`measure: "all"`), the N with the largest proxy (`measure: N`; the rest scaled by the median
  measured/proxy ratio) or none (`measure: 0`: proxies alone); one task per unit, run in this
  process, on `workers` local processes or on the Ray cluster at `ray` (`onnxcomp.precision.sweep`).
A unit's predicted error under scheme s is its measured error × proxy(s) / proxy(reference); errors
add over units. The allocator (`onnxcomp.algorithms.budget`) then picks one scheme per unit:
fewest predicted error within `size_budget` (a fraction of the input file "0.19x", bytes "120MB",
or "uniform": the predicted file of the presets' rule — every layer at the reference scheme, output
layers int8), or fewest bytes within `max_error` (predicted, in the metric's units).

Requires: calibration data. Guarantees: the graph is unchanged; `context.precision_plan` holds the
chosen scheme per linear for the weight-only passes that follow (AWQ, GPTQ, RTN read it);
`context.size_budget` the file-size bound that `compress` checks on the written model, and
`context.error_feeds` the feeds on which it measures the final model's error. The report lists per
unit the bytes, proxy and predicted error of every candidate, the measured error, the choice, the
Pareto front of the relaxation and the rank correlation of the proxy with the measurement.
"""

import re
import time
from dataclasses import replace

import numpy as np
import onnx_ir as ir

from onnxcomp.algorithms.budget import Option, allocate_bytes, allocate_error, pareto_front, total
from onnxcomp.algorithms.sensitivity import spearman, weighted_error
from onnxcomp.calibration.requests import GramRequest
from onnxcomp.emit.blockwise import BlockwiseEmitter
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.graph import initializer_bytes
from onnxcomp.ir.patterns import row_gather_tables
from onnxcomp.passes.base import CompressionPass
from onnxcomp.precision.measure import holdout_feeds
from onnxcomp.precision.plan import PrecisionPlan, Scheme, is_output_layer, stored_scheme
from onnxcomp.precision.sweep import Sweep, check_ray_address
from onnxcomp.precision.units import Unit, find_units, parse_scheme, quantize_unit, scheme_name
from onnxcomp.progress import progress

DEFAULT_CANDIDATES = [
    "int4-g128-sym",
    "int4-g128-asym",
    "int4-g64-sym",
    "int4-g32-sym",
    "int4-g32-asym",
    "int8-g128-sym",
    "int8-channel",  # where the target stores it: ort-cpu (fused to MatMulNBits at load), tensorrt, portable
    "fp16",
]
NODE_BYTES = 400  # a quantized layer's extra nodes, attributes and initializer names (≈ 300 measured on tiny graphs)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(x|b|kb|mb|gb)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9}


def parse_size_budget(value) -> tuple[str, float]:
    """'0.19x' → ('fraction', 0.19); '120MB' / 120000000 → ('bytes', 1.2e8); 'uniform' → ('uniform', 0)."""
    if value == "uniform":
        return "uniform", 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = f"{value}x" if value < 1 else f"{value}b"
    match = _SIZE.match(str(value))
    if not match:
        raise OnnxcompError(
            f"size budget {value!r}: write a fraction of the input file (0.19x), "
            "a size (120MB, 2GB, 5000000) or uniform"
        )
    number, unit = float(match.group(1)), (match.group(2) or "b").lower()
    if unit == "x":
        if not 0 < number <= 1:
            raise OnnxcompError(f"size budget {value!r}: a fraction must be in (0, 1]")
        return "fraction", number
    if number <= 0:
        raise OnnxcompError(f"size budget {value!r}: must be positive")
    return "bytes", number * _UNITS[unit]


class PlanPrecision(CompressionPass):
    name = "plan_precision"
    options = {
        "size_budget": "uniform",
        "max_error": None,
        "candidates": DEFAULT_CANDIDATES,
        "reference": "int4-g128-sym",
        "output_layer_bits": 8,  # the "uniform" budget's rule for output layers (as the presets)
        "measure": "all",
        "measure_feeds": 1,
        "measure_sequence": 128,
        "embedding_tables": "int8",  # untied word tables predicted as quantize_embedding stores them
        "exclude": [],
        "workers": 1,  # processes measuring units (onnxcomp.precision.sweep)
        "ray": "",  # or the HOST:PORT of a Ray head whose actors measure them
    }
    needs_calibration = True

    def validate_options(self) -> None:
        o = self.opts
        if o["workers"] < 1:
            raise self.fail(f"workers must be a positive integer, not {o['workers']!r}")
        if not isinstance(o["ray"], str):
            raise self.fail(f"ray must be a HOST:PORT string, not {o['ray']!r}")
        if o["max_error"] is not None:
            if isinstance(o["max_error"], bool) or not isinstance(o["max_error"], (int, float)) or o["max_error"] <= 0:
                raise self.fail(f"max_error must be a positive number, not {o['max_error']!r}")
        else:
            parse_size_budget(o["size_budget"])
        if not isinstance(o["candidates"], list) or not o["candidates"]:
            raise self.fail(f"candidates must be a non-empty list of schemes, not {o['candidates']!r}")
        self.candidates = [parse_scheme(c) for c in o["candidates"]]
        self.reference = parse_scheme(o["reference"])
        if self.reference not in self.candidates or self.reference.kind != "blockwise":
            raise self.fail(f"reference {o['reference']!r} must be one of the blockwise candidates")
        m = o["measure"]
        if m != "all" and (isinstance(m, bool) or not isinstance(m, int) or m < 0):
            raise self.fail(f"measure must be 'all' or a number of units ≥ 0, not {m!r}")
        for key in ("measure_feeds", "measure_sequence"):
            if isinstance(o[key], bool) or not isinstance(o[key], int) or o[key] < 1:
                raise self.fail(f"{key} must be a positive integer, not {o[key]!r}")
        if o["embedding_tables"] not in ("int8", "float"):
            raise self.fail(f"embedding_tables must be 'int8' or 'float', not {o['embedding_tables']!r}")
        if o["output_layer_bits"] not in (0, 4, 8):
            raise self.fail(f"output_layer_bits must be 0, 4 or 8, not {o['output_layer_bits']!r}")

    def preflight(self, model: ir.Model) -> None:
        if self.opts["ray"]:
            check_ray_address(self.opts["ray"])  # an unreachable cluster fails now, not after calibration

    def statistic_requests(self, model: ir.Model) -> list:
        units, _ = find_units(model, self.opts["exclude"])
        return [GramRequest(name) for unit in units for name in unit.inputs]

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        start = time.perf_counter()
        self.holdout = holdout_feeds(
            self.context.calibration, self.opts["measure_feeds"], self.opts["measure_sequence"]
        )
        units, skipped = find_units(model, self.opts["exclude"])
        if not units:
            raise self.fail("no linear layer with a constant 2-D float weight to plan")
        grams = self.context.statistics.grams
        schemes = [self._candidates(unit) for unit in units]
        ref_index = [self._reference_index(unit_schemes) for unit_schemes in schemes]
        costs, proxies = [], []
        tables = self._word_tables(model)
        apart = [sum(tables[name][1] for name in unit.tied_tables) for unit in units]  # if not shared
        for u, (unit, unit_schemes, ref) in enumerate(
            progress(list(zip(units, schemes, ref_index)), desc="sensitivity proxies", unit="unit")
        ):
            row_bytes, row_proxy = [], []
            for i, scheme in enumerate(unit_schemes):
                q = quantize_unit(unit, scheme)
                row_bytes.append(q.bytes + (0 if self._shares_tables(scheme) else apart[u]))
                row_proxy.append(
                    sum(
                        weighted_error(q.dequantized[lin.weight] - lin.weight_kn(), grams[lin.node.inputs[0].name])
                        for lin in unit.linears
                    )
                )
            costs.append(row_bytes)
            proxies.append(row_proxy)
            _release(unit)  # its weights' float copies: read again, one unit at a time, when measured
        measured, measured_units, metric = self._measure(
            model, units, [s[i] for s, i in zip(schemes, ref_index)], [p[i] for p, i in zip(proxies, ref_index)]
        )
        scale = [
            measured[u] / proxies[u][ref_index[u]] if proxies[u][ref_index[u]] > 0 else 0.0 for u in range(len(units))
        ]
        options = [[Option(b, p * scale[u]) for b, p in zip(costs[u], proxies[u])] for u in range(len(units))]
        fixed = self._fixed_bytes(model, units, tables)
        choice, budget = self._allocate(model, units, schemes, options, fixed, apart)
        plan = PrecisionPlan(self.reference)
        for unit, unit_schemes, c in zip(units, schemes, choice):
            for linear in unit.linears:
                plan.nodes[linear.node] = unit_schemes[c]
        self.context.precision_plan = plan
        unit_bytes, predicted = total(options, choice)
        if "file_bytes" in budget:
            self.context.size_budget = budget["file_bytes"]
        self.context.error_feeds = self.holdout
        self.details = {
            "metric": metric,
            "reference": scheme_name(self.reference),
            "budget": budget,
            "predicted_unit_bytes": unit_bytes,
            "predicted_file_bytes": fixed + unit_bytes,
            "predicted_error": predicted,
            "chosen": dict(sorted(_count(schemes[u][c] for u, c in enumerate(choice)).items())),
            "units": [
                {
                    "unit": unit.name,
                    "linears": [lin.name for lin in unit.linears],
                    "tied_tables": unit.tied_tables,
                    "parameters": unit.parameters,
                    "measured_error": measured[u] if u in measured_units else None,
                    "choice": scheme_name(schemes[u][choice[u]]),
                    "candidates": {
                        scheme_name(s): {"bytes": o.bytes, "proxy": proxies[u][i], "predicted_error": o.error}
                        for i, (s, o) in enumerate(zip(schemes[u], options[u]))
                    },
                }
                for u, unit in enumerate(units)
            ],
            "pareto": [
                {"unit_bytes": b, "file_bytes": fixed + b, "predicted_error": e} for b, e in pareto_front(options)
            ],
            "proxy_rank_correlation": spearman(
                [proxies[u][ref_index[u]] for u in measured_units], [measured[u] for u in measured_units]
            )
            if len(measured_units) > 2
            else None,
            "skipped": skipped,
            "seconds": round(time.perf_counter() - start, 2),
        }
        return ir.passes.PassResult(model, modified=False)

    def _reference_index(self, unit_schemes: list[Scheme]) -> int:
        """The scheme a unit is measured at: the reference, else its first blockwise candidate."""
        if self.reference in unit_schemes:
            return unit_schemes.index(self.reference)
        return next((i for i, s in enumerate(unit_schemes) if s.kind == "blockwise"), 0)

    def _candidates(self, unit: Unit):
        """The candidates the target can store (block bits and sizes, symmetry; groups that divide K
        on a whole-blocks target); bits it reads per channel but does not block (tensorrt: 8) become one
        per-channel candidate; a unit with a tied table gets symmetric blocks or channels only.
        `int8-channel` where the target also blocks int8 (ort-cpu: a DequantizeLinear over N that ONNX
        Runtime fuses into an 8-bit MatMulNBits) is not offered to a tied unit: a DequantizeLinear that
        the table's Gather reads too is not fused (ONNX Runtime 1.32: it then runs on every call)."""
        target = self.context.target
        fits = []
        for s in self.candidates:
            if s.kind == "blockwise" and target.weight_only_layout(s.bits) == "channel":
                s = Scheme("channel", s.bits, unit.linears[0].k, True)
            elif s.kind == "channel":
                if not (s.bits in target.channel_bits and "qdq" in target.weight_only_formats) or (
                    unit.tied_tables and target.weight_only_layout(s.bits) == "blocks"
                ):
                    continue
                s = replace(s, group=unit.linears[0].k)
            elif s.kind == "blockwise" and not (
                s.bits in target.block_bits
                and s.group in target.block_sizes
                and (s.symmetric or not target.symmetric_only)
                and (not target.whole_blocks or all(lin.k % s.group == 0 for lin in unit.linears))
            ):
                continue
            if s not in fits:
                fits.append(s)
        if unit.tied_tables:  # the shared table needs symmetric codes (see onnxcomp.precision.units)
            fits = [s for s in fits if s.kind in ("blockwise", "channel") and s.symmetric]
        return fits or [Scheme("keep")]

    def _fixed_bytes(self, model: ir.Model, units: list[Unit], tables: dict[str, tuple[int, int]]) -> int:
        """Predicted bytes of everything but the units' weights: the input's graph bytes, plus
        NODE_BYTES per weight for the nodes, attributes and names a quantized layer adds; tied tables
        go (stored with their LM head's codes); with `embedding_tables: int8`, other word tables
        (≥ 1M elements, quantize_embedding's default) count as int8 codes plus a float32 scale per row."""
        tied = {name for unit in units for name in unit.tied_tables}
        fixed = self.context.graph_bytes + initializer_bytes(model)
        fixed += sum(NODE_BYTES * len(unit.weights()) - unit.float_bytes for unit in units)
        for name, (float_bytes, stored) in tables.items():
            fixed -= float_bytes if name in tied else float_bytes - stored
        return fixed

    def _word_tables(self, model: ir.Model) -> dict[str, tuple[int, int]]:
        """Constant 2-D float tables read by row Gathers, by name: (float bytes, bytes stored apart from an
        LM head — quantize_embedding's rule: int8 codes plus a float32 scale per row from 1M elements
        with `embedding_tables: int8`)."""
        tables = {}
        for shape_tables in row_gather_tables(model).values():
            for gather, table in shape_tables:
                stored = table.nbytes
                if self.opts["embedding_tables"] == "int8" and table.size >= 1_000_000:
                    stored = table.size + 4 * table.shape[0]
                tables[gather.inputs[0].name] = (table.nbytes, stored)
        return tables

    def _shares_tables(self, scheme: Scheme) -> bool:
        """Whether an LM head at `scheme` also serves its tied tables' row Gathers, as the emitter writes it:
        per channel through its DequantizeLinear; in blocks only where the target's default weight-only
        format lets GatherBlockQuantized read the codes (MatMulNBits, MatMulInt4; not qdq: tensorrt,
        portable). Otherwise the table is stored apart, as quantize_embedding stores word tables."""
        if scheme.kind == "channel":
            return True
        if scheme.kind != "blockwise":
            return False
        return BlockwiseEmitter(self.context.target.weight_only_formats[0]).format_for(scheme.bits).gather_shares_codes

    def _measure(self, model, units, references, ref_proxies) -> tuple[list[float], list[int], str]:
        """Measured error of each unit at its reference scheme (the rest scaled from their proxy),
        the indices of the units measured, and the metric."""
        m = self.opts["measure"]
        order = sorted(range(len(units)), key=lambda u: -ref_proxies[u])
        chosen = sorted(order if m == "all" else order[:m])
        measured = [0.0] * len(units)
        metric = "proxy"
        if chosen:
            names = [lin.weight.name for unit in units for lin in unit.weights()]
            names += [t for unit in units for t in unit.tied_tables]
            sweep = Sweep(model, sorted(set(names)), self.holdout, self.opts["workers"], self.opts["ray"])
            metric = sweep.metric
            tasks = (_overrides(units[u], references[u]) for u in chosen)  # built as the sweep takes them
            where = f"measured sensitivity ({sweep.where})"
            for u, error in zip(chosen, progress(sweep.errors(tasks), desc=where, total=len(chosen), unit="unit")):
                measured[u] = error
            del sweep
        ratios = [measured[u] / ref_proxies[u] for u in chosen if ref_proxies[u] > 0]
        factor = float(np.median(ratios)) if ratios else 1.0
        for u in set(range(len(units))) - set(chosen):
            measured[u] = ref_proxies[u] * factor
        return measured, chosen, metric

    def _allocate(self, model, units, schemes, options, fixed, apart) -> tuple[list[int], dict]:
        o = self.opts
        if o["max_error"] is not None:
            return allocate_error(options, float(o["max_error"])), {"max_error": float(o["max_error"])}
        kind, value = parse_size_budget(o["size_budget"])
        if kind == "uniform":
            unit_budget = sum(
                self._uniform_bytes(unit, unit_schemes, opts, unit_apart)
                for unit, unit_schemes, opts, unit_apart in zip(units, schemes, options, apart)
            )
            file_budget = fixed + unit_budget  # the predicted file of the presets' rule
        else:
            file_budget = int(value * self._input_bytes(model)) if kind == "fraction" else int(value)
            unit_budget = file_budget - fixed
        smallest = fixed + sum(min(x.bytes for x in opts) for opts in options)
        if unit_budget < smallest - fixed:
            raise self.fail(
                f"size budget {o['size_budget']!r} ({file_budget / 1e6:.2f} MB) is below the "
                f"smallest model these candidates reach, {smallest / 1e6:.2f} MB"
            )
        choice = allocate_bytes(options, unit_budget)
        return choice, {"size_budget": str(o["size_budget"]), "unit_bytes": unit_budget, "file_bytes": file_budget}

    def _uniform_bytes(self, unit: Unit, unit_schemes, opts, apart: int) -> int:
        """The unit's bytes as the presets' rule writes it: the reference scheme, output layers at
        output_layer_bits symmetric, each as the target stores it (tensorrt: int8 per channel; on
        whole-blocks targets a group that does not divide K shrinks)."""
        target = self.reference
        if any(is_output_layer(lin.node) for lin in unit.linears) and self.opts["output_layer_bits"]:
            target = replace(target, bits=self.opts["output_layer_bits"], symmetric=True)
        target = stored_scheme(target, unit.linears[0].k, self.context.target)
        if target in unit_schemes:
            return opts[unit_schemes.index(target)].bytes
        return quantize_unit(unit, target).bytes + (0 if self._shares_tables(target) else apart)

    def _input_bytes(self, model: ir.Model) -> int:
        return self.context.input_bytes or initializer_bytes(model)

    @classmethod
    def summary(cls, details: dict) -> str | None:
        chosen = ", ".join(f"{n} {name}" for name, n in details["chosen"].items())
        predicted = details["predicted_file_bytes"] / 1e6
        text = f"plan_precision: {len(details['units'])} units ({chosen}); predicted file {predicted:.1f} MB"
        if details.get("proxy_rank_correlation") is not None:
            text += f", proxy/measured rank correlation {details['proxy_rank_correlation']:.2f}"
        return text


def _count(schemes) -> dict:
    counts: dict[str, int] = {}
    for s in schemes:
        counts[scheme_name(s)] = counts.get(scheme_name(s), 0) + 1
    return counts


def _overrides(unit: Unit, scheme: Scheme) -> dict[str, np.ndarray]:
    """The unit's weights (and tied tables) as `scheme` stores them, by initializer name."""
    dequantized = quantize_unit(unit, scheme).dequantized
    overrides = {}
    for lin in unit.weights():
        overrides[lin.weight.name] = lin.from_kn(dequantized[lin.weight])
        for table in unit.tied_tables:
            overrides[table] = np.ascontiguousarray(dequantized[lin.weight].T)
    _release(unit)
    return overrides


def _release(unit: Unit) -> None:
    """Forget the float copies of the unit's weights (a SmolLM2's all: 0.4 GB while the sweep runs)."""
    for lin in unit.linears:
        lin.release()
