"""The parity report: one self-contained HTML page and one PNG summary from a `ReportData`
(crossval.report_data). Rendering only: data in, files out, each written atomically.

The page needs nothing but a browser: no script, no stylesheet or font from elsewhere, every
plot a PNG embedded as a `data:` URI, so a CI artifact opens offline and shows the same thing
years later. It holds the verdict and its reason, the first divergent op (highlighted, with the
metrics of the ops before and after it), per-position 1-cos / KL / max|d| plots of the logits
(prompt positions and teacher-forced decode steps), the layer x op divergence map, the top-k
tokens of both sides at the worst positions, both engines (spec, name, version, build,
numerics), the model's digest and the gate's bounds.

Plots use matplotlib (the optional `[report]` extra: the plotting library of record in the
scientific Python stack, maintained, with an Agg renderer that needs no display), drawn on
`matplotlib.figure.Figure` with the Agg canvas directly, so making a report never changes the
caller's pyplot backend or global state.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from bitnet.errors import MissingExtraError
from bitnet.files.atomic import atomic_write_bytes, atomic_write_text
from crossval.report_data import ReportData

HTML_NAME = "report.html"
PNG_NAME = "summary.png"
#: log-scale plots draw an exact 0 here (marked as exact, not as a measured value)
FLOOR = 1e-18
DPI = 100
#: ops listed before and after the first divergent one in the ops table
CONTEXT_OPS = 6
#: (field, label, bound key) of the logits plots, top to bottom
LOGIT_METRICS = (
    ("one_minus_cos", "1 - cosine", "max_one_minus_cos"),
    ("kl", "KL(reference || engine)", "max_kl"),
    ("rel_max_abs", "max|d| / max|reference|", "max_rel_abs"),
)


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    png: Path


def require_matplotlib() -> None:
    """Raise MissingExtraError naming the `[report]` extra when matplotlib is absent (call it
    before the comparison runs, so a missing extra costs nothing)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtraError("the parity report (--report)", "matplotlib", "report") from None


# -- small helpers ------------------------------------------------------------------------------

def _num(v, fmt: str = ".3g") -> str:
    if v is None:
        return "-"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "+inf" if f > 0 else "-inf"
    return format(f, fmt)


def _e(s) -> str:
    return html.escape("" if s is None else str(s), quote=True)


def _op_label(op: dict | None) -> str:
    if not op:
        return "none"
    layer = op.get("layer")
    return f"layer {layer} · {op.get('op')}" if layer is not None else f"{op.get('op')} (outside the layers)"


def _same_op(a: dict, b: dict | None) -> bool:
    return b is not None and a.get("layer") == b.get("layer") and a.get("op") == b.get("op")


def _finite(v) -> bool:
    return v is not None and math.isfinite(float(v))


def _png(fig) -> tuple[bytes, int, int]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # no layout engine: one tight bounding box at save time costs a fraction of constrained
    # layout's iterations (seconds per figure on a loaded 2-core machine)
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15, metadata={"Software": None})
    data = buf.getvalue()
    w, h = struct.unpack(">II", data[16:24])  # the IHDR chunk: the size as drawn
    return data, int(w), int(h)


# -- figures --------------------------------------------------------------------------------------

def _plot_metric(ax, rows: list[dict], key: str, bound, first, xlabel: str) -> None:
    """One metric over a section on a log axis: exact zeros drawn hollow at FLOOR, non-finite
    values as red crosses at the top, the bound dashed, the first divergence a red line."""
    from matplotlib.transforms import blended_transform_factory

    xs = [int(r["position"]) for r in rows]
    vals = [float(r[key]) for r in rows]
    fin = [(x, v) for x, v in zip(xs, vals, strict=True) if math.isfinite(v) and v > 0]
    zero = [x for x, v in zip(xs, vals, strict=True) if v == 0]
    bad = [x for x, v in zip(xs, vals, strict=True) if not math.isfinite(v)]
    if fin:
        ax.plot([x for x, _ in fin], [v for _, v in fin], "o-", color="#1f5fa8", ms=4, lw=1.2, label="measured")
    if zero:
        ax.plot(zero, [FLOOR] * len(zero), "o", mfc="none", color="#1f5fa8", ms=5, label=f"exact 0 (drawn at {FLOOR:g})")
    if bad:
        tr = blended_transform_factory(ax.transData, ax.transAxes)
        ax.plot(bad, [0.95] * len(bad), "x", color="#c0392b", ms=8, mew=2, transform=tr, label="non-finite")
    if _finite(bound) and float(bound) > 0:
        ax.axhline(float(bound), ls="--", color="#c0392b", lw=1, label=f"bound {float(bound):.3g}")
    if first is not None:
        ax.axvline(int(first), color="#c0392b", lw=2, alpha=0.6, label="first divergence")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.grid(True, which="major", alpha=0.3)
    if xs:
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    else:
        ax.text(0.5, 0.5, "nothing compared", ha="center", va="center", transform=ax.transAxes, color="#777")


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:  # nothing plotted (nothing compared): no empty legend
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def logits_figure(data: ReportData):
    from matplotlib.figure import Figure

    sections = [("prompt positions", data.positions, data.first_divergence, "position")]
    if data.decode_positions:
        sections.append(("teacher-forced decode steps", data.decode_positions, data.decode_first_divergence,
                         "decode step"))
    n = len(LOGIT_METRICS)
    fig = Figure(figsize=(5.2 * len(sections) + 1.0, 2.5 * n + 0.6))
    axes = fig.subplots(n, len(sections), squeeze=False, sharey="row", gridspec_kw={"hspace": 0.42, "wspace": 0.1})
    for c, (title, rows, first, xlabel) in enumerate(sections):
        for r, (key, label, bkey) in enumerate(LOGIT_METRICS):
            ax = axes[r][c]
            _plot_metric(ax, rows, key, data.bounds.get(bkey), first, xlabel)
            if r == 0:
                ax.set_title(title)
            if c == 0:
                ax.set_ylabel(label)
            if r == 0 and c == len(sections) - 1:
                _legend(ax)
    return fig


def _row_keys(trace: dict) -> list:
    """Each op's row: its layer, or "in" / "out" for an op outside the layers before / after
    them in graph order (the embedding; the final norm and the logits)."""
    keys, seen_layer = [], False
    for op in trace.get("ops", []):
        layer = op.get("layer")
        seen_layer = seen_layer or layer is not None
        keys.append(layer if layer is not None else ("out" if seen_layer else "in"))
    return keys


def _grid(trace: dict, which: str):
    """(row labels, column labels, values [rows][cols] (None: no such op), ok flags, cell of the
    first divergent op) for `which` = "free" (the op's own metrics) or "teacher_forced"."""
    ops = trace.get("ops", [])
    keys = _row_keys(trace)
    rows: list = []
    cols: list[str] = []
    for key, op in zip(keys, ops, strict=True):
        if key not in rows:
            rows.append(key)
        if op["op"] not in cols:
            cols.append(op["op"])
    vals: list[list[float | None]] = [[None] * len(cols) for _ in rows]
    oks = [[True] * len(cols) for _ in rows]
    cell = None
    first = trace.get("first_divergent")
    for key, op in zip(keys, ops, strict=True):
        r, c = rows.index(key), cols.index(op["op"])
        src = op if which == "free" else (op.get("teacher_forced") or {})
        v = src.get("one_minus_cos")
        vals[r][c] = float(v) if v is not None else float("nan")
        oks[r][c] = bool(src.get("ok", True)) if src else True
        if first and cell is None and _same_op(op, first):
            cell = (r, c)
    labels = [f"L{x}" if isinstance(x, int) else str(x) for x in rows]
    return labels, cols, vals, oks, cell


def _has(vals) -> bool:
    return any(v is not None and not math.isnan(v) for row in vals for v in row)


def _draw_map(ax, fig, labels, cols, vals, oks, cell, title: str, xlabels: bool = True) -> None:
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    a = np.array([[np.nan if v is None else v for v in row] for row in vals], dtype=float)
    shown = np.where(a == 0, FLOOR, a)
    pos = shown[np.isfinite(shown) & (shown > 0)]
    lo = float(pos.min()) if pos.size else FLOOR
    hi = float(pos.max()) if pos.size else 1.0
    norm = LogNorm(vmin=lo, vmax=max(hi, lo * 10))
    cmap = colormaps["magma_r"].with_extremes(bad="#d9d9d9")
    m = np.ma.masked_invalid(np.where(shown > 0, shown, np.nan))
    im = ax.imshow(m, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    if xlabels:
        ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=8)
        ax.set_xlabel("op (graph order)")
    else:  # a panel above another: the op names are under the bottom one
        ax.set_xticks(range(len(cols)), [""] * len(cols))
    ax.set_yticks(range(len(labels)), labels, fontsize=8 if len(labels) <= 40 else 6)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("layer")
    out = [(c, r) for r, row in enumerate(oks) for c, ok in enumerate(row) if not ok and vals[r][c] is not None]
    if out:  # one artist for every out-of-tolerance cell (hundreds in a deep model)
        ax.plot([c for c, _ in out], [r for _, r in out], "o", ls="none", ms=4, color="#2ecc71", mec="white", mew=0.6)
    if cell is not None:
        r, c = cell
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="#00a0ff", lw=3))
        ax.annotate("first divergent", (c, r), xytext=(8, -8), textcoords="offset points", color="#00a0ff",
                    fontsize=8, fontweight="bold", ha="left", va="top")
    fig.colorbar(im, ax=ax, label="1 - cosine", shrink=0.9, pad=0.02)


def heatmap_figure(trace: dict):
    """The layer x op map: the ops' own (free-running) 1-cos, and beside it the teacher-forced
    one (each op run on the reference's input) where the trace has it. Green dots: ops out of
    tolerance; the blue frame: the first divergent op."""
    from matplotlib.figure import Figure

    panels = []
    for which, title in (("free", "free-running: error as it arrives"),
                         ("teacher_forced", "teacher-forced: each op on the reference's input")):
        g = _grid(trace, which)
        if _has(g[2]):
            panels.append((g, title))
    if not panels:  # ops listed, nothing measured: one empty map saying so
        panels = [(_grid(trace, "free"), "no metrics measured")]
    labels, cols = panels[0][0][0], panels[0][0][1]
    w = max(6.0, 0.42 * len(cols) + 2.8)
    h = max(2.2, 0.24 * len(labels) + 1.0)  # one panel; the panels stack, each as wide as the page
    fig = Figure(figsize=(w, h * len(panels)))
    gap = 0.6 / max(1.0, 0.24 * len(labels))  # about 0.6 in between the panels, as a fraction of one
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"hspace": gap})[:, 0]
    for i, (ax, (g, title)) in enumerate(zip(axes, panels, strict=True)):
        _draw_map(ax, fig, *g, title=title, xlabels=i == len(panels) - 1)
    return fig


def summary_figure(data: ReportData):
    """The CI-log PNG: verdict and first divergent op as text, 1-cos over every compared
    position (prompt, then decode steps), and the divergence map when there is one."""
    from matplotlib.figure import Figure

    has_map = data.trace is not None and bool(data.trace.get("ops"))
    n_rows = len({op.get("layer") for op in data.trace.get("ops", [])}) if has_map and data.trace else 0
    heights = [0.9, 2.4] + ([max(1.2, 0.14 * n_rows)] if has_map else [])  # inches of each panel
    gaps = 0.9  # inches between panels: the axis labels below each
    fig = Figure(figsize=(11, sum(heights) + gaps * (len(heights) - 1) + (1.6 if has_map else 0.6)))
    axes = fig.subplots(len(heights), 1, gridspec_kw={"height_ratios": heights,
                                                      "hspace": gaps / (sum(heights) / len(heights))})
    banner = axes[0]
    banner.axis("off")
    colour = {"pass": "#1e8449", "fail": "#c0392b"}.get(data.verdict, "#7d6608")
    eng = (data.engine or {}).get("spec", "?")
    ref = (data.reference or {}).get("spec", "?")
    banner.text(0.0, 0.95, f"parity {data.verdict.upper()}", color=colour, fontsize=18, fontweight="bold",
                va="top", transform=banner.transAxes)
    banner.text(0.0, 0.45, f"{eng}  vs  {ref}   (gate {data.gate}"
                + (f", {data.family}" if data.family else "") + ")", fontsize=9, va="top", transform=banner.transAxes)
    banner.text(0.0, 0.12, "first divergent op: " + (_op_label(data.first_divergent_op) if data.trace else
                                                     "not traced for this pair"),
                fontsize=10, fontweight="bold", va="top", transform=banner.transAxes)
    sha = (data.model or {}).get("sha256") or ""
    banner.text(1.0, 0.95, f"model sha256 {sha[:16]}...", fontsize=8, ha="right", va="top", transform=banner.transAxes)
    ax = axes[1]
    rows = [dict(r, position=int(r["position"])) for r in data.positions]
    n = len(rows)
    rows += [dict(r, position=n + int(r["position"])) for r in data.decode_positions]
    first = data.first_divergence if data.first_divergence is not None else (
        n + data.decode_first_divergence if data.decode_first_divergence is not None else None)
    _plot_metric(ax, rows, "one_minus_cos", data.bounds.get("max_one_minus_cos"), first,
                 "position" + (f" (decode steps from {n})" if data.decode_positions else ""))
    if data.decode_positions:
        ax.axvspan(n - 0.5, n + len(data.decode_positions) - 0.5, color="#f0e6ff", zorder=0)
    ax.set_ylabel("logits 1 - cosine")
    _legend(ax)
    if has_map:
        assert data.trace is not None
        g = _grid(data.trace, "teacher_forced")
        title = "teacher-forced 1-cos per layer x op"
        if not _has(g[2]):
            g, title = _grid(data.trace, "free"), "1-cos per layer x op"
        _draw_map(axes[2], fig, *g, title=title)
    return fig


# -- HTML -------------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;
max-width:1200px;padding:0 18px 40px;color:#1b1b1b;background:#fff}
header{padding:14px 18px;margin:14px 0;border-radius:6px;color:#fff}
header.pass{background:#1e8449}header.fail{background:#c0392b}header.skipped,header.error{background:#7d6608}
header h1{margin:0 0 6px;font-size:26px}header p{margin:0;font-size:14px;word-break:break-word}
h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.l,th.l{text-align:left}
tr.first td{background:#fff1c2;font-weight:bold}tr.bad td{background:#fde2e0}
#first-divergent{border:3px solid #00a0ff;background:#e8f6ff;border-radius:6px;padding:10px 16px;font-size:15px}
#first-divergent strong{font-size:18px}
.note{color:#555;font-size:13px}.mono{font-family:"DejaVu Sans Mono",monospace;font-size:12px;word-break:break-all}
img{max-width:100%;height:auto;border:1px solid #eee}
.topk{display:inline-block;margin-right:18px;vertical-align:top}
"""


def _img(fig_png: tuple[bytes, int, int], alt: str, ident: str) -> str:
    data, w, h = fig_png
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img id="{ident}" class="plot" alt="{_e(alt)}" width="{w}" height="{h}" src="data:image/png;base64,{b64}">'


def _engines(data: ReportData) -> str:
    rows = []
    for side, info in (("engine under test", data.engine), ("reference", data.reference)):
        info = info or {}
        rows.append("<tr>" + "".join(f'<td class="l{" mono" if k == "spec" else ""}">{_e(v)}</td>' for k, v in (
            ("side", side), ("spec", info.get("spec")), ("name", info.get("name")), ("version", info.get("version")),
            ("build", info.get("build")), ("numerics", info.get("numerics")))) + "</tr>")
    head = "".join(f'<th class="l">{h}</th>' for h in ("", "spec", "name", "version", "build", "numerics profile"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _facts(data: ReportData) -> str:
    m = data.model or {}
    bounds = ", ".join(f"{k} {_num(v)}" for k, v in sorted(data.bounds.items()))
    timing = ", ".join(f"{k} {_num(v)}" for k, v in sorted(data.timings.items()))
    rows = [("model", f'<span class="mono">{_e(m.get("path"))}</span>'),
            ("model sha256", f'<span class="mono">{_e(m.get("sha256"))}</span>'),
            ("model bytes", _e(m.get("bytes"))), ("architecture", _e(data.arch)),
            ("gate", f"{_e(data.gate)}" + (f" (format family {_e(data.family)})" if data.family else "")),
            ("bounds", _e(bounds) or "-"),
            ("prompt", f"{len(data.prompt_ids)} tokens: <span class=\"mono\">{_e(data.prompt_ids[:64])}"
                       f"{' ...' if len(data.prompt_ids) > 64 else ''}</span>"),
            ("timings (s)", _e(timing) or "-"),
            ("made by", _e(f"{data.tool.get('name', 'bitnet-harness')} {data.tool.get('version', '')}, "
                           f"{data.created_at}"))]
    return "<table>" + "".join(f'<tr><th class="l">{k}</th><td class="l">{v}</td></tr>' for k, v in rows) + "</table>"


def _diverges(op: dict) -> bool:
    """Where an op is judged: teacher-forced when that ran, else free-running."""
    tf = op.get("teacher_forced")
    return not (tf.get("ok", True) if tf else op.get("ok", True))


def _first_divergent(data: ReportData) -> str:
    if data.trace is None:
        return ('<section id="first-divergent" data-op="none"><strong>First divergent op: not localised</strong>'
                '<p>No trace for this comparison: the pair has no op-level capture and no per-layer gate '
                "(op-by-op tracing needs ours against libllama or against ours: <code>bitnet crossval --trace</code>).</p></section>")
    first = data.first_divergent_op
    free_first = data.trace.get("first_free_running")
    if first is None:
        if data.trace.get("amplification") and free_first:
            where = (f" Free-running, {_e(_op_label(free_first))} is the first op out of tolerance, but no op is "
                     "teacher-forced: rounding flips amplified through the layers, not a bug at one op.")
        elif data.verdict == "fail":
            where = (" The divergence the verdict reports lies outside what was traced (decode steps through the KV "
                     "cache, the output head) or shows only end to end.")
        else:
            where = ""
        return ('<section id="first-divergent" data-op="none"><strong>First divergent op: none</strong>'
                f"<p>Every traced op ({len(data.trace.get('ops', []))}) is within tolerance where it is judged."
                f"{where}</p></section>")
    op = next((o for o in data.trace.get("ops", []) if _same_op(o, first)), {})
    tf = op.get("teacher_forced") or {}
    parts = []
    if tf:
        parts.append(f"teacher-forced (on the reference's input) 1-cos {_num(tf.get('one_minus_cos'), '.3e')}, "
                     f"rel max|d| {_num(tf.get('rel_max_abs'), '.3e')}")
    if not _isnan(op.get("one_minus_cos")):
        parts.append(f"free-running 1-cos {_num(op.get('one_minus_cos'), '.3e')}, "
                     f"rel max|d| {_num(op.get('rel_max_abs'), '.3e')}")
    if free_first and not _same_op(free_first, first):
        parts.append(f"first out of tolerance free-running: {_e(_op_label(free_first))}")
    ref_name = f" (reference tensor <code>{_e(op.get('ref_name'))}</code>)" if op.get("ref_name") else ""
    label = _op_label(first)
    return (f'<section id="first-divergent" data-op="{_e(label)}">First divergent op: <strong>{_e(label)}</strong>'
            f"{ref_name}<p>{'; '.join(parts)}</p></section>")


def _isnan(v) -> bool:
    try:
        return v is None or math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def _ok_cell(metrics: dict | None) -> str:
    if not metrics or _isnan(metrics.get("one_minus_cos")):
        return "<td>-</td>"
    return "<td>ok</td>" if metrics.get("ok", True) else "<td><b>OUT</b></td>"


def _ops_table(data: ReportData) -> str:
    ops = (data.trace or {}).get("ops") or []
    if not ops:
        return ""
    first = data.first_divergent_op
    idx = next((i for i, o in enumerate(ops) if _same_op(o, first)), None)
    if idx is None or len(ops) <= 2 * CONTEXT_OPS + 1:
        lo, hi = 0, len(ops)
    else:
        lo, hi = max(0, idx - CONTEXT_OPS), min(len(ops), idx + CONTEXT_OPS + 1)
    rows = []
    for o in ops[lo:hi]:
        tf = o.get("teacher_forced") or {}
        cls = "first" if _same_op(o, first) else ("bad" if _diverges(o) else "")
        rows.append(f'<tr class="{cls}"><td>{_e(o.get("layer") if o.get("layer") is not None else "-")}</td>'
                    f'<td class="l">{_e(o["op"])}</td><td class="l mono">{_e(o.get("ref_name") or "-")}</td>'
                    f"<td>{_num(o.get('one_minus_cos'), '.2e')}</td><td>{_num(o.get('rel_max_abs'), '.2e')}</td>"
                    f"{_ok_cell(o)}"
                    f"<td>{_num(tf.get('one_minus_cos'), '.2e') if tf else '-'}</td>"
                    f"<td>{_num(tf.get('rel_max_abs'), '.2e') if tf else '-'}</td>{_ok_cell(tf)}</tr>")
    shown = f"ops {lo}..{hi - 1} of {len(ops)} in graph order" + (" (around the first divergent op)" if hi - lo < len(ops) else "")
    head = "".join(f"<th{' class=l' if h in ('op', 'reference tensor') else ''}>{h}</th>" for h in (
        "layer", "op", "reference tensor", "1-cos", "rel max|d|", "free-running", "teacher-forced 1-cos",
        "teacher-forced rel max|d|", "teacher-forced"))
    extra = []
    t = data.trace or {}
    if t.get("reference") or t.get("mode"):
        extra.append(f"reference: {_e(t.get('reference') or '?')}; pass traced: {_e(t.get('mode') or 'prompt')}")
    if t.get("bounds"):
        extra.append("tolerance per op: " + _e(", ".join(f"{k} {_num(v)}" for k, v in sorted(t["bounds"].items()))))
    if t.get("unmatched"):
        extra.append("not compared: " + _e(", ".join(
            f"{u.get('op')}" + (f"-{u['layer']}" if u.get("layer") is not None else "") + f" ({u.get('why', '')})"
            for u in t["unmatched"])))
    notes = "".join(f'<p class="note">{x}</p>' for x in extra)
    return (f'<p class="note">{shown}; nan or -: not measured on that path.</p>'
            f'<table id="ops">{"<tr>" + head + "</tr>"}{"".join(rows)}</table>{notes}')


def _positions_table(rows: list[dict], first, label: str) -> str:
    if not rows:
        return ""
    out = []
    for p in rows:
        cls = "first" if p["position"] == first else ""
        out.append(f'<tr class="{cls}"><td>{label}{p["position"]}</td><td>{_num(p["cosine"], ".7f")}</td>'
                   f"<td>{_num(p.get('one_minus_cos'), '.2e')}</td><td>{_num(p['max_abs'])}</td>"
                   f"<td>{_num(p.get('rel_max_abs'), '.2e')}</td><td>{_num(p['kl'], '.2e')}</td>"
                   f"<td>{_e(p['top1_ours'])}/{_e(p['top1_ref'])}</td><td>{_num(p['top5_overlap'], '.1f')}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("pos", "cosine", "1-cos", "max|d|", "rel max|d|", "KL",
                                             "top-1 engine/ref", "top-5 overlap"))
    return f"<table><tr>{head}</tr>{''.join(out)}</table>"


def _piece(data: ReportData, t: int) -> str:
    p = data.pieces.get(int(t))
    return f'<span class="mono">{_e(repr(p))}</span>' if p is not None else ""


def _topk(data: ReportData) -> str:
    if not data.topk:
        return '<p class="note">No top-k tables: nothing was compared.</p>'
    out = []
    for t in data.topk:
        where = "position" if t["section"] == "prompt" else "decode step"
        ref_rows = "".join(
            f"<tr><td>{i + 1}</td><td>{_e(r['id'])}</td><td class=l>{_piece(data, r['id'])}</td>"
            f"<td>{_num(r['logit'], '.4f')}</td><td>{_num(r['prob'], '.4f')}</td>"
            f"<td>{_num(r['engine_logit'], '.4f')}</td><td>{_num(r['engine_prob'], '.4f')}</td>"
            f"<td>{_e(r['engine_rank'])}</td></tr>" for i, r in enumerate(t["reference"]))
        eng_rows = "".join(
            f"<tr><td>{i + 1}</td><td>{_e(r['id'])}</td><td class=l>{_piece(data, r['id'])}</td>"
            f"<td>{_num(r['logit'], '.4f')}</td><td>{_num(r['prob'], '.4f')}</td>"
            f"<td>{_num(r['reference_logit'], '.4f')}</td><td>{_e(r['reference_rank'])}</td></tr>"
            for i, r in enumerate(t["engine"]))
        out.append(
            f'<div class="topk-at"><h3>{where} {t["position"]} <span class="note">({_e(t["why"])})</span></h3>'
            '<div class="topk"><table><caption>reference top-k, and the engine on the same tokens</caption>'
            "<tr><th>#</th><th>id</th><th class=l>piece</th><th>ref logit</th><th>ref p</th><th>engine logit</th>"
            f"<th>engine p</th><th>engine rank</th></tr>{ref_rows}</table></div>"
            '<div class="topk"><table><caption>engine top-k</caption>'
            "<tr><th>#</th><th>id</th><th class=l>piece</th><th>engine logit</th><th>engine p</th><th>ref logit</th>"
            f"<th>ref rank</th></tr>{eng_rows}</table></div></div>")
    return "".join(out)


def _greedy(data: ReportData) -> str:
    g = data.greedy or {}
    if not g.get("reference"):
        return '<p class="note">No greedy continuation compared.</p>'

    def toks(ids):
        return ", ".join(f"{_e(t)}{(' ' + _piece(data, t)) if data.pieces.get(int(t)) is not None else ''}" for t in ids)

    return (f"<table><tr><th class=l>exact match</th><td class=l>{_num(g.get('match'), '.3f')}"
            f" (first divergence at generated token {_e(g.get('first_divergence'))})</td></tr>"
            f"<tr><th class=l>engine</th><td class=l>{toks(g.get('engine') or [])}</td></tr>"
            f"<tr><th class=l>reference</th><td class=l>{toks(g.get('reference') or [])}</td></tr></table>")


def _layers_table(data: ReportData) -> str:
    if not data.layers:
        return ""
    rows = "".join(
        f'<tr class="{"first" if x["layer"] == data.layer_first_divergence else ""}"><td>{_e(x["layer"])}</td>'
        f"<td>{_num(x.get('median_rel_abs'), '.2e')}</td><td>{_num(x.get('max_rel_abs'), '.2e')}</td>"
        f"<td>{_num(x.get('max_one_minus_cos'), '.2e')}</td><td>{_e(x.get('worst_position'))}</td></tr>"
        for x in data.layers)
    return ("<h2>Per layer, teacher-forced on the reference's input</h2><table><tr><th>layer</th>"
            "<th>median rel max|d|</th><th>max rel max|d|</th><th>max 1-cos</th><th>worst pos</th></tr>"
            f"{rows}</table>")


def _map_section(data: ReportData, heat) -> str:
    if data.trace is None or not data.trace.get("ops"):
        return ('<p class="note" id="no-trace">No trace: this comparison recorded no op-level trace and no per-layer '
                "metrics, so there is no layer x op map to draw. Ours against libllama records them "
                "(<code>bitnet crossval --cpp-dir DIR</code>, per-layer gate on by default; "
                "<code>--trace</code> for every op).</p>")
    src = {"trace": "the op-by-op trace (every named intermediate, graph order)",
           "layers": "the per-layer teacher-forced gate: one op per layer, the layer output <code>l_out</code>; "
                     "an op-level trace was not recorded for this comparison"}[data.trace_source]
    return (f'<p class="note">From {src}. Colour: 1 - cosine of the op\'s output against the reference\'s '
            "(log scale; grey: not measured, or non-finite). Green dots: out of tolerance; blue frame: the first divergent op.</p>"
            + (_img(heat, "layer x op divergence map", "plot-heatmap") if heat else ""))


def render_html(data: ReportData, logits_png, heat_png) -> str:
    eng = (data.engine or {}).get("spec", "?")
    ref = (data.reference or {}).get("spec", "?")
    verdict = data.verdict if data.verdict in ("pass", "fail", "skipped", "error") else "error"
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in data.notes)
    decode_tbl = _positions_table(data.decode_positions, data.decode_first_divergence, "d")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Parity {verdict.upper()}: {_e(eng)} vs {_e(ref)}</title>
<style>{CSS}</style></head>
<body>
<header class="{verdict}" id="verdict" data-verdict="{verdict}"><h1>Parity {verdict.upper()}</h1>
<p>{_e(data.reason)}</p></header>
{_first_divergent(data)}
<h2>Engines</h2>
{_engines(data)}
{notes}
<h2>Where it diverges: layer x op</h2>
{_map_section(data, heat_png)}
{_ops_table(data)}
<h2>Logits, position by position</h2>
<p class="note">Per position: 1 - cosine, KL(reference || engine) of the softmaxes and max|d| relative to the
reference's largest |logit|, prompt positions and teacher-forced decode steps (the reference's greedy tokens fed
to both). Dashed: the gate's bound; red line: the first diverging position.</p>
{_img(logits_png, "per-position logit metrics", "plot-logits") if logits_png else ""}
<h2>Model, gate, numerics</h2>
{_facts(data)}
<h3>Prompt positions</h3>
{_positions_table(data.positions, data.first_divergence, "") or '<p class="note">none compared</p>'}
{("<h3>Decode steps</h3>" + decode_tbl) if decode_tbl else ""}
{_layers_table(data)}
<h2>Top-k tokens at the worst positions</h2>
{_topk(data)}
<h2>Greedy continuation</h2>
{_greedy(data)}
<footer><p class="note">Self-contained: every image is embedded; viewing needs no network.</p></footer>
</body></html>
"""


def write_report(data: ReportData, out_dir: str | os.PathLike[str]) -> ReportFiles:
    """Write `report.html` and `summary.png` into out_dir (created if needed), each atomically."""
    require_matplotlib()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        from bitnet.errors import ConfigError

        raise ConfigError(f"--report {out_dir}: exists and is not a directory; give a folder for the report")
    logits = _png(logits_figure(data)) if (data.positions or data.decode_positions) else None
    heat = _png(heatmap_figure(data.trace)) if data.trace and data.trace.get("ops") else None
    summary = _png(summary_figure(data))
    out.mkdir(parents=True, exist_ok=True)
    png = atomic_write_bytes(out / PNG_NAME, summary[0])
    page = atomic_write_text(out / HTML_NAME, render_html(data, logits, heat))
    return ReportFiles(page, png)
