"""Mixed precision on SmolLM2-135M: our size-budgeted plans against uniform int4 and the fixed rule.

    .venv/bin/python benchmarks/mixed_smollm2.py                     # every row (long: ~1 h on 2 cores)
    .venv/bin/python benchmarks/mixed_smollm2.py --rows fp32,uniform-g128-sym,mixed-at-g128-sym --json /tmp/m.json

Rows, all with AWQ scales + GPTQ codes (`w4a16-awq-gptq` / `w4a16-mixed`, calibration
`models.smollm2.calibration_feeds()`), compiled one by one in fresh worker processes
(`benchmarks/int4_smollm2.py`'s worker, which also measures perplexity on 40 held-out windows and
latency):
- `uniform-g128-sym|asym`, `uniform-g32-sym`: every linear at that scheme, the LM head (tied with
  the embedding) at int8;
- `fixed-rule`: llama.cpp's Q4_K_M rule as ModelOpt users copy it — v and down projections of the
  first and last eighth of the layers and of every third layer in between at int8 (g128 sym), the
  rest int4 g128 asymmetric, the head int8;
- `mixed-at-<row>`: `w4a16-mixed` with `size_budget` = the file size of <row> in this run (so equal
  size is exact, not assumed).
NNCF's mixed precision is not a row yet (not installed here; see the README's mixed-precision section).
"""

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent))

from benchmarks import int4_smollm2 as base  # noqa: E402


def uniform(group: int, symmetric: bool) -> dict:
    return {"tool": "onnxcomp", "recipe": "w4a16-awq-gptq", "group_size": group, "symmetric": symmetric}


def mixed_at(row: str) -> dict:
    return {"tool": "onnxcomp", "recipe": "w4a16-mixed", "group_size": 128, "symmetric": True, "budget_of": row}


ROWS = {
    "fp32": None,
    "uniform-g128-sym": uniform(128, True),
    "uniform-g128-asym": uniform(128, False),
    "uniform-g32-sym": uniform(32, True),
    "fixed-rule": {**uniform(128, False), "plan": "benchmarks.mixed_smollm2:fixed_rule_plan"},
    "mixed-at-g128-sym": mixed_at("uniform-g128-sym"),
    "mixed-at-g128-asym": mixed_at("uniform-g128-asym"),
    "mixed-at-fixed-rule": mixed_at("fixed-rule"),
    "mixed-at-g32-sym": mixed_at("uniform-g32-sym"),
}


def fixed_rule_plan(path: str):
    """llama.cpp's use_more_bits(i, n): i < n/8, i ≥ 7n/8, or (i − n/8) % 3 == 2 → v and down at int8.
    Layers are found structurally (SmolLM2's exported names carry no module names): per decoder
    block the units are q/k/v (one input), o, gate/up, down, in graph order."""
    import onnx
    import onnx_ir as ir

    from onnxcomp.precision.plan import PrecisionPlan, Scheme, is_output_layer
    from onnxcomp.precision.units import find_units

    model = ir.from_proto(onnx.load(path))
    units, _ = find_units(model)
    blocks = [u for u in units if not any(is_output_layer(lin.node) for lin in u.linears)]
    n = len(blocks) // 4
    int8, int4 = Scheme("blockwise", 8, 128, True), Scheme("blockwise", 4, 128, False)
    plan = PrecisionPlan(int4)
    for i in range(n):
        qkv, _, _, down = blocks[4 * i : 4 * i + 4]
        if i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2:
            plan.layers[qkv.linears[2].name] = int8  # v_proj: the third linear reading the block's input
            plan.layers[down.linears[0].name] = int8
    for node in model.graph:
        if node.op_type == "MatMul" and is_output_layer(node):
            plan.layers[node.name] = int8
    return plan


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    base.add_arguments(parser, ROWS, runs=20)
    args = parser.parse_args(argv)
    if args.worker:
        return base.worker_main(args)
    rows = base.parse_rows(args, parser, ROWS)
    rows = ["fp32", *[r for r in rows if r != "fp32"]]
    for row in list(rows):  # a mixed row needs the row whose size it matches, compiled first
        need = (ROWS[row] or {}).get("budget_of")
        if need and need not in rows:
            rows.insert(rows.index(row), need)
    workdir = Path(tempfile.mkdtemp(prefix="mixed_smollm2."))
    results = {}
    try:
        for row in rows:
            spec = dict(ROWS[row]) if ROWS[row] else None
            if spec and "budget_of" in spec:
                source = results[spec.pop("budget_of")]
                size = Path(source["path"]).stat().st_size if source.get("path") else None
                spec["options"] = {"plan_precision": {"size_budget": size}}
            results.update(base.compile_rows("smollm2", [row], {row: spec}, workdir / row, args, script=HERE))
        base.measure(results, args.runs)
    finally:
        base.cleanup(workdir, args.keep)
    base.write_json(args.json, results, workdir=str(workdir))
    print(base.table(rows, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
