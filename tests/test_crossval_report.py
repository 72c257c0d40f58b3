"""The parity report (AC33): `bitnet crossval ... --report DIR` writes one self-contained HTML
page and a PNG summary. A real report of a planted fault (crossval.faults, our engine with the
fault against the unmodified engine: no C++ needed) is checked as files and opened in a real
headless Chromium (Debian's package; the test skips with the reason when it is absent), which
must decode every plot and show the first divergent op."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bitnet.cli import IO, main

pytestmark = pytest.mark.ac33

PROMPT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330]
FAULT = "ffn_sub_norm_skipped"  # planted in every layer: layer 0's ffn_sub_norm is where it first shows
PLANTED = "layer 0 · ffn_sub_norm"
IMG = re.compile(r"<img\b[^>]*>")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


@pytest.fixture(scope="module")
def mpl():
    return pytest.importorskip("matplotlib", reason="the parity report needs the [report] extra (matplotlib): "
                                                   "pip install 'bitnet-harness[report]'")


@pytest.fixture(scope="module")
def tq2(bitnet_model_factory):
    return bitnet_model_factory(arch="bitnet", fmt="tq2_0", seed=7)


@pytest.fixture(scope="module")
def fault_report(mpl, tq2, tmp_path_factory):
    """(comparison, report data, files) of a real report: our engine with FAULT planted against
    the unmodified engine, prompt, 4 teacher-forced decode steps, every layer teacher-forced and
    the op-by-op trace (crossval.trace, ours against ours)."""
    from crossval.fault_check import planted_fault_comparison
    from crossval.report import write_report
    from crossval.report_data import report_data

    c = planted_fault_comparison(tq2, PROMPT, FAULT, numerics="llama.cpp", n_greedy=4, trace=True)
    data = report_data(c, tq2, PROMPT)
    return c, data, write_report(data, tmp_path_factory.mktemp("fault-report") / "report")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def _images(page: str) -> list[tuple[str, bytes, int, int]]:
    """(id, PNG bytes, width attr, height attr) of every <img>; each must be a data: URI."""
    out = []
    for tag in IMG.findall(page):
        src = re.search(r'src="([^"]*)"', tag).group(1)
        assert src.startswith("data:image/png;base64,"), f"an image not embedded: {src[:80]}"
        w, h = (int(re.search(fr'{a}="(\d+)"', tag).group(1)) for a in ("width", "height"))
        out.append((re.search(r'id="([^"]*)"', tag).group(1), base64.b64decode(src.split(",", 1)[1]), w, h))
    return out


def test_report_is_self_contained_and_names_the_first_divergent_op(fault_report, tq2):
    from bitnet.receipts.build import sha256_file

    c, data, files = fault_report
    page = files.html.read_text(encoding="utf-8")
    assert c.result.verdict == "fail" and c.result.layer_first_divergence == 0, c.result.reason
    assert c.result.trace["first_divergent"] == {"layer": 0, "op": "ffn_sub_norm"}
    # nothing fetched from elsewhere: no script, no stylesheet link, every src/href a data: URI or an anchor
    assert "<script" not in page.lower() and "<link" not in page.lower()
    for attr in re.findall(r'\b(?:src|href)="([^"]*)"', page):
        assert attr.startswith(("data:", "#")), attr
    imgs = _images(page)
    assert {i for i, *_ in imgs} == {"plot-logits", "plot-heatmap"}
    for ident, png, w, h in imgs:
        assert _png_size(png) == (w, h) and w > 100 and h > 100, ident
    w, h = _png_size(files.png.read_bytes())
    assert w > 300 and h > 200
    # the facts: verdict, first divergent op, engines, digest, numerics, gate
    assert 'data-verdict="fail"' in page
    first = re.search(r'<section id="first-divergent" data-op="([^"]*)"', page).group(1)
    assert html.unescape(first) == PLANTED
    assert sha256_file(tq2) in page
    for spec in (c.engine.spec, c.reference.spec):
        assert html.escape(spec) in page
    assert "llama.cpp" in page and "int8-act" in page
    # top-k tables at the first diverging prompt position and decode step
    assert f"position {c.result.first_divergence} <span" in page
    assert c.result.decode_first_divergence is not None and f"decode step {c.result.decode_first_divergence} <span" in page
    assert data.trace_source == "trace" and data.trace == c.result.trace


def test_without_an_op_trace_the_map_is_the_per_layer_gate(fault_report):
    """The same comparison without its op trace: the map falls back to the per-layer
    teacher-forced gate (one l_out op per layer), and the page says where the map came from."""
    from crossval.report import render_html
    from crossval.report_data import from_receipt

    c, data, _ = fault_report
    receipt = _receipt(c, data)
    receipt.pop("trace", None)
    d = from_receipt(receipt, topk=c.result.topk)
    assert d.trace_source == "layers" and len(d.trace["ops"]) == len(c.result.layers)
    page = render_html(d, None, None)
    assert f'data-op="layer {c.result.layer_first_divergence} · l_out"' in page
    assert "the per-layer teacher-forced gate" in page


def test_topk_tables_hold_both_sides_at_the_worst_positions(fault_report):
    import numpy as np

    c, _, _ = fault_report
    r = c.result
    prompt = [t for t in r.topk if t["section"] == "prompt"]
    assert prompt[0]["position"] == r.first_divergence and prompt[0]["why"].startswith("first divergence")
    worst = max(r.positions, key=lambda p: p.one_minus_cos).position
    assert worst in {t["position"] for t in prompt}
    for t in r.topk:
        ref_logits = [x["logit"] for x in t["reference"]]
        assert ref_logits == sorted(ref_logits, reverse=True) and len(ref_logits) == 5
        assert t["reference"][0]["engine_rank"] >= 1
        assert np.isclose(sum(x["prob"] for x in t["reference"]), sum(x["prob"] for x in t["reference"]))


def test_topk_positions_put_the_first_divergence_first_and_nan_worst():
    import numpy as np

    from crossval.parity import position_metrics, topk_tables

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((6, 40)).astype(np.float32)
    ours = ref.copy()
    ours[1] += 0.01  # small
    ours[4] += rng.standard_normal(40).astype(np.float32)  # the worst finite one
    ours[5, 3] = np.nan  # non-finite ranks worst of all
    rows = position_metrics(ours, ref)
    t = topk_tables(ours, ref, rows, "prompt", first=1, k=3, n=3)
    assert [(x["position"], x["why"]) for x in t] == [
        (1, "first divergence, rank 3 by 1-cos"), (5, "rank 1 by 1-cos"), (4, "rank 2 by 1-cos")]
    top = [x["id"] for x in t[2]["reference"]]
    assert top == list(np.argsort(-ref[4], kind="stable")[:3])
    assert [x["engine_rank"] for x in t[0]["reference"]] == [1, 2, 3]  # a shift by 0.01 keeps the order


def test_trace_from_layers_is_the_trace_shape():
    from crossval.report_data import trace_from_layers

    layers = [{"layer": 0, "max_rel_abs": 1e-7, "max_one_minus_cos": 1e-12, "worst_position": 3, "median_rel_abs": 0.0},
              {"layer": 1, "max_rel_abs": 0.2, "max_one_minus_cos": 0.01, "worst_position": 1, "median_rel_abs": 0.1}]
    t = trace_from_layers(layers, 1, {"layer_max_rel_abs": 1e-3, "layer_max_median_rel_abs": 1e-4}, "bitnet")
    assert t["version"] == 1 and t["arch"] == "bitnet" and t["first_divergent"] == {"layer": 1, "op": "l_out"}
    assert [(o["layer"], o["op"], o["ref_name"], o["ok"]) for o in t["ops"]] == [
        (0, "l_out", "l_out-0", True), (1, "l_out", "l_out-1", False)]
    assert t["ops"][1]["teacher_forced"] == {"one_minus_cos": 0.01, "rel_max_abs": 0.2, "ok": False}
    # teacher-forced only: the free-running metrics were not measured
    assert all(o["one_minus_cos"] != o["one_minus_cos"] for o in t["ops"])  # NaN


def _op_trace(n_layer: int, first: tuple[int, str]) -> dict:
    """A trace in the localisation's shape: every op of every layer, graph order, the error
    appearing at `first` and growing after it."""
    names = ["attn_norm", "Qcur", "Kcur", "Vcur", "kq_soft_max", "attn_sub_norm", "attn_out", "ffn_inp",
             "ffn_norm", "ffn_gate", "ffn_up", "ffn_act", "ffn_sub_norm", "ffn_out", "l_out"]
    ops, hit = [], False
    for layer in range(n_layer):
        for name in names:
            hit = hit or (layer, name) == first
            omc = min(0.5, 10.0 ** (-4 + layer)) if hit else 1e-13
            ops.append({"layer": layer, "op": name, "ref_name": f"{name}-{layer}", "one_minus_cos": omc,
                        "rel_max_abs": omc ** 0.5, "ok": not hit,
                        "teacher_forced": {"one_minus_cos": 1e-3 if (layer, name) == first else 1e-13,
                                           "rel_max_abs": 1e-2 if (layer, name) == first else 1e-7,
                                           "ok": (layer, name) != first}})
    ops += [{"layer": None, "op": "result_norm", "ref_name": "result_norm", "one_minus_cos": 0.1,
             "rel_max_abs": 0.3, "ok": False, "teacher_forced": None},
            {"layer": None, "op": "result_output", "ref_name": "result_output", "one_minus_cos": 0.1,
             "rel_max_abs": 0.3, "ok": False, "teacher_forced": None}]
    return {"version": 1, "arch": "bitnet", "ops": ops, "first_divergent": {"layer": first[0], "op": first[1]}}


def test_an_op_trace_in_the_receipt_draws_the_map_and_names_its_op(fault_report, tmp_path):
    from crossval.report import write_report
    from crossval.report_data import from_receipt

    c, data, files = fault_report
    receipt = json.loads(json.dumps(_receipt(c, data)))
    receipt["trace"] = _op_trace(3, (1, "ffn_sub_norm"))
    d = from_receipt(receipt, topk=c.result.topk)
    assert d.trace_source == "trace" and d.first_divergent_op == {"layer": 1, "op": "ffn_sub_norm"}
    page = write_report(d, tmp_path / "r").html.read_text(encoding="utf-8")
    assert 'data-op="layer 1 · ffn_sub_norm"' in page and "ffn_sub_norm-1" in page
    assert "the op-by-op trace" in page
    # the ops table: the first divergent op and the ops before and after it, that one marked
    rows = re.findall(r'<tr class="(first|bad|)"><td>(\d+|-)</td><td class="l">([^<]+)</td>', page)
    names = [(layer, op) for _, layer, op in rows]
    assert ("1", "ffn_sub_norm") in names and ("1", "ffn_act") in names and ("1", "ffn_out") in names
    assert [x for x in rows if x[0] == "first"] == [("first", "1", "ffn_sub_norm")]
    assert {i for i, *_ in _images(page)} == {"plot-logits", "plot-heatmap"}


def _receipt(c, data) -> dict:
    from crossval.parity import parity_receipt

    return parity_receipt(c.result, model=data.model["path"], prompt_ids=data.prompt_ids,
                          engine=c.engine.to_dict(), reference=c.reference.to_dict(), timings={})


def test_html_escapes_what_engines_and_reasons_say():
    from crossval.report import render_html
    from crossval.report_data import ReportData

    evil = '<script>alert("x")</script>'
    d = ReportData(verdict="error", reason=evil, gate="exact", family=None, bounds={},
                   engine={"spec": f'cmd:"{evil}"', "name": evil, "version": "1", "build": "", "numerics": "?"},
                   reference=None, model={"path": evil, "sha256": "0" * 64, "bytes": 1}, prompt_ids=[1],
                   positions=[], first_divergence=None)
    page = render_html(d, None, None)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert 'id="no-trace"' in page and "not localised" in page


def test_amplification_and_unmatched_ops_are_said_not_drawn_as_a_bug():
    """A trace whose ops leave the bounds only free-running (rounding flips that grow through the
    layers) has no first divergent op: the page says amplification, names the first op out of
    tolerance free-running, and lists the ops the reference has no tensor for."""
    from crossval.report import render_html
    from crossval.report_data import ReportData

    trace = _op_trace(2, (1, "l_out"))
    for op in trace["ops"]:
        if op["teacher_forced"]:
            op["teacher_forced"].update(one_minus_cos=1e-13, rel_max_abs=1e-7, ok=True)
    trace.update(first_divergent=None, first_free_running={"layer": 1, "op": "l_out"}, amplification=True,
                 reference="libllama (upstream)", mode="prompt",
                 unmatched=[{"layer": 0, "op": "ffn_act", "why": "the reference names no tensor for it"}])
    d = ReportData(verdict="pass", reason="ok", gate="exact", family="int8-act", bounds={}, engine=None,
                   reference=None, model={}, prompt_ids=[1, 2], positions=[], first_divergence=None,
                   trace=trace, trace_source="trace")
    page = render_html(d, None, None)
    assert 'data-op="none"' in page and "amplified through the layers" in page and "layer 1 · l_out" in page
    assert "not compared: ffn_act-0 (the reference names no tensor for it)" in page
    assert "reference: libllama (upstream); pass traced: prompt" in page
    assert '<tr class="first">' not in page  # no op is marked as the bug


def test_cli_report_for_a_pair_without_trace_says_so(mpl, tq2, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    # a cmd: engine captures no layers, so this pair has neither a trace nor a per-layer gate (ours
    # against ours has both since any pair that can force and capture layers is gated per layer)
    example = Path(__file__).resolve().parents[1] / "examples" / "engines" / "harness_engine.py"
    engine = f'cmd:"{sys.executable}" "{example}" --profile llama.cpp'
    rc = main(["crossval", "--engine", engine, "--reference", "reference:llama.cpp", "--model", str(tq2),
               "--ids", "1,2,3,4", "--greedy", "2", "--json", "--quiet", "--report", str(tmp_path / "rep")],
              IO(out, err))
    assert rc == 0, err.getvalue()
    doc = json.loads(out.getvalue())
    page = Path(doc["report"]["html"]).read_text(encoding="utf-8")
    assert Path(doc["report"]["png"]).read_bytes()[:4] == b"\x89PNG"
    assert 'data-verdict="pass"' in page and 'id="no-trace"' in page and "plot-heatmap" not in page
    assert {i for i, *_ in _images(page)} == {"plot-logits"}


def test_a_comparison_that_could_not_run_still_gets_its_report(mpl, tq2, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    rc = main(["crossval", "--engine", 'cmd:"false"', "--reference", "reference", "--model", str(tq2), "--ids", "1,2",
               "--quiet", "--report", str(tmp_path / "rep")], IO(out, err))
    assert rc == 2 and len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
    page = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert 'data-verdict="error"' in page and html.escape('cmd:"false"') in page and "<img" not in page
    assert (tmp_path / "rep" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert "report: " in out.getvalue()


def test_missing_matplotlib_is_one_line_naming_the_extra(tq2, tmp_path, monkeypatch):
    from bitnet.errors import MissingExtraError
    from crossval.report import require_matplotlib

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(MissingExtraError, match=r"bitnet-harness\[report\]"):
        require_matplotlib()
    err = io.StringIO()
    rc = main(["crossval", "--engine", "reference", "--model", str(tq2), "--ids", "1,2", "--report",
               str(tmp_path / "rep")], IO(io.StringIO(), err))
    assert rc == 2 and len(err.getvalue().strip().splitlines()) == 1
    assert "matplotlib" in err.getvalue() and "[report]" in err.getvalue()
    assert not (tmp_path / "rep").exists()


def test_report_dir_that_is_a_file_fails_before_any_work(mpl, tq2, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    err = io.StringIO()
    rc = main(["crossval", "--engine", "reference", "--model", str(tq2), "--ids", "1,2", "--report", str(f)],
              IO(io.StringIO(), err))
    assert rc == 2 and "--report" in err.getvalue() and "not a directory" in err.getvalue()


# -- a real browser ---------------------------------------------------------------------------------

PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images].map(i => ({id: i.id, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
    shown: i.getBoundingClientRect().width * i.getBoundingClientRect().height}));
  const first = document.getElementById("first-divergent");
  const p = document.createElement("pre");
  p.id = "probe";
  p.textContent = JSON.stringify({imgs, first: first ? first.innerText : null});
  document.body.appendChild(p);
});
</script>"""


@pytest.fixture
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("no chromium on PATH: the browser check needs Debian's package (apt-get install chromium); "
                    ".ci/run installs it")
    return exe


def _browser(exe: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=180)


def test_a_real_browser_renders_the_plots_and_names_the_first_divergent_op(chromium, fault_report, tmp_path):
    """The page as Chromium renders it: every plot decoded with its size and laid out, the
    first divergent op in the text; the screenshot is not blank and shows the verdict's colour.
    The probe reads the page after load; it is added to a copy, so the report itself stays
    script-free."""
    exe = chromium
    c, _, files = fault_report
    page = files.html.read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    r = _browser(exe, tmp_path, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert m, f"no probe in the DOM Chromium dumped (rc {r.returncode}): {r.stderr[-2000:]}"
    probe = json.loads(html.unescape(m.group(1)))
    sizes = {i["id"]: (i["w"], i["h"]) for i in probe["imgs"]}
    assert set(sizes) == {"plot-logits", "plot-heatmap"}
    for ident, _png, w, h in _images(page):
        assert sizes[ident] == (w, h), (ident, sizes[ident])  # decoded, at the PNG's own size
    assert all(i["complete"] and i["shown"] > 0 for i in probe["imgs"]), probe["imgs"]
    assert PLANTED in probe["first"]

    shot = tmp_path / "shot.png"
    r = _browser(exe, tmp_path, "--window-size=1200,1600", f"--screenshot={shot}", files.html.as_uri())
    assert shot.is_file(), f"no screenshot (rc {r.returncode}): {r.stderr[-2000:]}"
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1600)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, "a blank or near-blank screenshot"
    fail_red = sum(n for n, (r_, g, b) in colours if abs(r_ - 0xC0) < 12 and abs(g - 0x39) < 12 and abs(b - 0x2B) < 12)
    assert fail_red > 5000, "the FAIL header is not on screen"
