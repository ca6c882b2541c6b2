"""A compression report as one self-contained HTML page: tables plus inline PNG plots (matplotlib).

For a mixed-precision run (a `plan_precision` pass): measured sensitivity per unit, the chosen
scheme per unit, the size by scheme, and the Pareto front of predicted error against file size with
the chosen point; for every run: the passes table and the size before/after. Every number in the
page is also in the JSON report.
"""

import base64
import html
import io

from onnxcomp.errors import OnnxcompError

COLORS = {"int4": "#4c72b0", "int8": "#dd8452", "keep": "#55a868", "fp16": "#c44e52"}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OnnxcompError("an HTML report needs matplotlib: pip install 'onnxcomp[report]'") from None
    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _color(scheme: str) -> str:
    return COLORS.get(scheme.split("-")[0], "#8172b3")


def _plan_figures(plan: dict) -> list[tuple[str, str]]:
    plt = _pyplot()
    units = plan["units"]
    figures = []
    fig, ax = plt.subplots(figsize=(max(6, len(units) * 0.12), 3))
    errors = [u["measured_error"] if u["measured_error"] is not None else 0.0 for u in units]
    ax.bar(range(len(units)), errors, color=[_color(u["choice"]) for u in units])
    ax.set_yscale("log")
    ax.set_xlabel("unit (graph order)")
    ax.set_ylabel(f"measured error at {plan['reference']} ({plan['metric']})")
    ax.set_title("Sensitivity per unit; colour = chosen precision (blue int4, orange int8, red fp16, green float)")
    figures.append(("Sensitivity and chosen precision per unit", _png(fig)))

    sizes: dict[str, int] = {}
    for u in units:
        sizes[u["choice"]] = sizes.get(u["choice"], 0) + u["candidates"][u["choice"]]["bytes"]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(list(sizes), [b / 1e6 for b in sizes.values()], color=[_color(s) for s in sizes])
    ax.set_xlabel("MB of quantized weights")
    ax.set_title("Size by precision")
    figures.append(("Size by precision", _png(fig)))

    front = plan["pareto"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p["file_bytes"] / 1e6 for p in front], [p["predicted_error"] for p in front], "o-", ms=3, label="front")
    ax.plot([plan["predicted_file_bytes"] / 1e6], [plan["predicted_error"]], "r*", ms=14, label="chosen")
    ax.set_xlabel("predicted file size (MB)")
    ax.set_ylabel(f"predicted error ({plan['metric']})")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Pareto front of the allocation")
    figures.append(("Pareto front", _png(fig)))
    return figures


def _guard_section(guard: dict) -> list[str]:
    """Latency before/after the speed guard, and every trial it timed."""
    if "skipped" in guard:
        return ["<h2>Speed guard</h2>", f"<p>Not timed: {html.escape(guard['skipped'])}.</p>"]
    shapes = " and ".join(
        ", ".join(f"{k}: {'×'.join(map(str, v))}" for k, v in feed.items()) for feed in guard["shapes"]
    )
    rows = [("compressed", guard["before"]), *((t["revert"], t["ratio"]) for t in guard["trials"])]
    rows.append(("written", guard["after"]))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(rows) + 1))
    ax.barh([label for label, _ in rows][::-1], [ratio for _, ratio in rows][::-1], color="#4c72b0")
    ax.axvline(1.0, color="k", lw=1)
    ax.axvline(guard["latency_budget"], color="r", ls="--", lw=1, label=f"budget {guard['latency_budget']:.2f}×")
    ax.set_xlabel("latency × the input model's (same run, interleaved)")
    ax.legend()
    reverted = ", ".join(guard["reverted_layers"]) or "none"
    return [
        "<h2>Speed guard</h2>",
        f"<p>Timed at {html.escape(shapes)}: {guard['before']:.2f}× the input's latency before, "
        f"{guard['after']:.2f}× written ({'met' if guard['met'] else 'missed'}). "
        f"Back in float: {html.escape(reverted)}.</p>",
        _png(fig),
    ]


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(report: dict) -> str:
    """The page for a `compress` report."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>onnxcomp report</title><style>",
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}img{max-width:100%}</style></head><body>",
        f"<h1>onnxcomp: {html.escape(str(report.get('input')))}</h1>",
        f"<p>{report['input_bytes'] / 1e6:.2f} MB → {report['output_bytes'] / 1e6:.2f} MB "
        f"({report['output_bytes'] / report['input_bytes']:.3f}×) in {report['seconds']:.1f} s</p>",
    ]
    if "final_error" in report:
        final = report["final_error"]
        parts.append(f"<p>Measured output error of the written model: {final['value']:.4g} ({final['metric']})</p>")
    if "size_budget" in report:
        budget = report["size_budget"]
        state = "met" if budget["met"] else "missed"
        parts.append(f"<p>Size budget {budget['bytes'] / 1e6:.2f} MB: {state}.</p>")
    parts.append("<h2>Passes</h2>")
    parts.append(
        _table(
            ["pass", "seconds", "nodes before", "nodes after", "weights MB before", "weights MB after"],
            [
                [
                    e["pass"],
                    e["seconds"],
                    e["nodes_before"],
                    e["nodes_after"],
                    f"{e['bytes_before'] / 1e6:.2f}",
                    f"{e['bytes_after'] / 1e6:.2f}",
                ]
                for e in report["passes"]
            ],
        )
    )
    for entry in report["passes"]:
        if entry["pass"] == "guard_speed" and "details" in entry:
            parts.extend(_guard_section(entry["details"]))
        if entry["pass"] != "plan_precision" or "details" not in entry:
            continue
        plan = entry["details"]
        parts.append("<h2>Mixed precision</h2>")
        for title, image in _plan_figures(plan):
            parts.append(f"<h3>{html.escape(title)}</h3>{image}")
        parts.append(
            _table(
                ["unit", "linears", "parameters", "measured error", "choice", "bytes"],
                [
                    [
                        u["unit"],
                        len(u["linears"]),
                        u["parameters"],
                        "—" if u["measured_error"] is None else f"{u['measured_error']:.3g}",
                        u["choice"],
                        u["candidates"][u["choice"]]["bytes"],
                    ]
                    for u in plan["units"]
                ],
            )
        )
    parts.append("</body></html>")
    return "\n".join(parts)
