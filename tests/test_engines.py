"""The engine protocol and its adapters (AC21): specs, the reference adapter, the cmd: protocol
with the example external engine and with engines that crash, hang or answer wrongly, entry-point
plugins, the bitnet crossval CLI over any pair, and parity receipts naming both engines."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bitnet.engines import CapabilityMissing, EngineError, open_engine, parse_spec
from bitnet.errors import ConfigError, ReceiptError
from crossval.pair import compare_engines

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "engines" / "harness_engine.py"
MISBEHAVING = Path(__file__).resolve().parent / "engines" / "misbehaving.py"
PROMPT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330]

pytestmark = pytest.mark.ac21


def example_spec(*args: str) -> str:
    return f'cmd:"{sys.executable}" "{EXAMPLE}" ' + " ".join(args)


def bad_engine(mode: str, timeout: float = 20.0):
    e = open_engine(f'cmd:"{sys.executable}" "{MISBEHAVING}" {mode}')
    e.timeout = timeout
    return e


@pytest.fixture(scope="module")
def i2s(bitnet_model_factory):
    return bitnet_model_factory(arch="bitnet-b1.58", fmt="i2_s", seed=5)


@pytest.fixture(scope="module")
def tq2(bitnet_model_factory):
    return bitnet_model_factory(arch="bitnet", fmt="tq2_0", seed=7)


def test_specs_parse_and_unknown_kinds_are_named():
    assert parse_spec("reference:bitnet.cpp@native") == ("reference", "bitnet.cpp@native")
    assert parse_spec("reference@native") == ("reference", "@native")
    assert parse_spec('cmd:"my engine" --x') == ("cmd", '"my engine" --x')
    with pytest.raises(ConfigError, match="unknown engine kind 'nope'.*known: cmd, hf, libllama, reference"):
        open_engine("nope:x")
    with pytest.raises(ConfigError, match="unknown numerics profile"):
        open_engine("reference:fastest")
    with pytest.raises(ConfigError, match="name the program"):
        open_engine("cmd:")
    e = open_engine("reference:llama.cpp@numpy")
    assert (e.profile, e.backend) == ("llama.cpp", "numpy")
    assert e.capabilities.claims("bitnet", "tq2_0") and not e.capabilities.claims("bitnet-b1.58", "i2_s")


def test_reference_adapter_answers_every_request(i2s):
    e = open_engine("reference")
    e.load(i2s)
    lg = e.logits(PROMPT)
    assert lg.shape == (len(PROMPT), 384) and lg.dtype == np.float32
    g = e.greedy(PROMPT, 4)
    assert len(g) == 4 and g[0] == int(lg[-1].argmax())
    assert e.tokenize("hi") == e._engine.encode("hi", add_special=False, parse_special=False)
    info = e.describe()
    assert info.spec == "reference" and info.numerics == "bitnet.cpp"  # inferred from the I2_S model


def test_the_example_external_engine_passes_against_ours(i2s, tmp_path):
    eng = open_engine(example_spec())
    c = compare_engines(eng, open_engine("reference"), i2s, PROMPT, gate="exact", n_greedy=4,
                        receipt=tmp_path / "parity.json")
    assert c.verdict == "pass", c.result.reason
    assert c.result.greedy_match == 1.0 and min(p.cosine for p in c.result.positions) > 0.99999
    doc = json.loads((tmp_path / "parity.json").read_text())
    assert doc["schema_version"].startswith("2.")
    assert doc["engine"]["spec"] == eng.spec and doc["engine"]["name"] == "harness-example"
    assert doc["engine"]["numerics"] == "bitnet.cpp" and doc["reference"]["spec"] == "reference"
    eng.load(i2s)
    ref = open_engine("reference")
    ref.load(i2s)
    texts = ["Hello world", "<|begin_of_text|>x"]
    assert eng.tokenize_many(texts, True, True) == ref.tokenize_many(texts, True, True)


@pytest.mark.parametrize("mode,match", [
    ("crash", r"crash: op 'evaluate' died with SIGSEGV; stderr: misbehaving engine, mode crash"),
    ("exit3", r"exited 3; stderr: .*out of memory \(pretend\)"),
    ("garbage", r"not one JSON object .*this is not json"),
    ("wrong-protocol", r"speaks protocol 'someone-else/9', expected 'bitnet-harness-engine/1'"),
    ("wrong-shape", r"logits have shape \[13, 384\]; expected \[12, n_vocab\]"),
    ("float64", r"logits are float64; expected float32"),
    ("nan", r"non-finite logit at position 11, token 7"),
    ("no-file", r"no logits at .*logits_path"),
])
def test_a_misbehaving_engine_is_an_error_verdict_with_its_stderr(i2s, mode, match):
    c = compare_engines(bad_engine(mode), open_engine("reference"), i2s, PROMPT, n_greedy=0)
    assert c.verdict == "error" and not c.passed
    assert c.result.reason.startswith("engine: cmd:")
    import re

    assert re.search(match, c.result.reason), c.result.reason


def test_a_hanging_engine_is_killed_at_the_timeout(i2s):
    c = compare_engines(bad_engine("hang", timeout=2.0), open_engine("reference"), i2s, PROMPT, n_greedy=0)
    assert c.verdict == "error" and "timeout: op 'evaluate' ran past 2 s and was killed" in c.result.reason
    assert "misbehaving engine, mode hang" in c.result.reason  # its stderr tail came back


def test_a_missing_capability_is_skipped_or_named_never_passed(i2s):
    e = bad_engine("describe-ok")  # declares greedy and tokenize missing
    with pytest.raises(CapabilityMissing, match="cannot tokenize: the engine declares it cannot"):
        e.require("tokenize")
    e.load(i2s)
    with pytest.raises(CapabilityMissing):
        e.tokenize("x")
    # greedy missing: the logits are still compared, and the verdict says greedy was not
    ok = open_engine(example_spec("--loads", "bitnet-b1.58/i2_s"))
    ok_caps = ok.capabilities
    assert ok_caps.claims("bitnet-b1.58", "i2_s") and not ok_caps.claims("bitnet", "tq2_0")
    broken_describe = bad_engine("describe-garbage")
    with pytest.raises(EngineError, match="not one JSON object"):
        broken_describe.describe()


def test_greedy_left_out_is_said(i2s, tmp_path):
    prog = tmp_path / "nogreedy.py"
    prog.write_text(EXAMPLE.read_text().replace('"greedy": True', '"greedy": False'))
    c = compare_engines(open_engine(f'cmd:"{sys.executable}" "{prog}"'), open_engine("reference"), i2s, PROMPT,
                        n_greedy=4)
    assert c.verdict == "pass" and c.result.greedy_match is None
    assert "greedy not compared" in c.result.reason and "cannot greedy" in c.result.reason


def test_third_party_adapters_register_by_entry_point(tmp_path, monkeypatch, i2s):
    """A real distribution on sys.path, as `pip install` would leave it."""
    (tmp_path / "my_engine.py").write_text(
        "import numpy as np\n"
        "from bitnet.engines import Capabilities, Engine, EngineInfo\n"
        "class Zeros(Engine):\n"
        "    capabilities = Capabilities(greedy=False)\n"
        "    def logits(self, ids):\n"
        "        return np.zeros((len(ids), int(self.arg)), np.float32)\n"
        "    def describe(self):\n"
        "        return EngineInfo(self.spec, 'zeros', '1.0', 'python', 'none')\n"
        "def factory(spec, arg):\n"
        "    e = Zeros(spec)\n"
        "    e.arg = arg\n"
        "    return e\n")
    dist = tmp_path / "my_engine-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-engine\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[bitnet_harness.engines]\nzeros = my_engine:factory\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from bitnet.engines import known_kinds

    assert "zeros" in known_kinds()
    e = open_engine("zeros:384")
    assert e.describe().name == "zeros"
    c = compare_engines(e, open_engine("reference"), i2s, PROMPT, n_greedy=0)
    assert c.verdict == "fail" and c.result.first_divergence == 0  # all-zero logits are not our model


def test_cli_crossval_any_pair_with_receipt_and_exit_codes(i2s, tmp_path):
    from bitnet.cli import IO, main

    out, err = io.StringIO(), io.StringIO()
    rc = main(["crossval", "--engine", example_spec(), "--model", str(i2s), "--ids", "1,2,3,4,5",
               "--profile", "exact", "--receipt", str(tmp_path / "r.json"), "--json", "--greedy", "2"], IO(out, err))
    assert rc == 0, err.getvalue()
    doc = json.loads(out.getvalue())
    assert doc["verdict"] == "pass" and doc["engine"]["name"] == "harness-example" and doc["reference"]["spec"] == "reference"
    from crossval.receipt import load_parity_receipt, verify_parity_receipt

    rec = load_parity_receipt(tmp_path / "r.json")
    assert verify_parity_receipt(rec) == []
    out, err = io.StringIO(), io.StringIO()
    rc = main(["crossval", "--engine", f'cmd:"{sys.executable}" "{MISBEHAVING}" crash', "--model", str(i2s),
               "--ids", "1,2", "--json"], IO(out, err))
    assert rc == 2 and json.loads(out.getvalue())["verdict"] == "error"
    rc = main(["crossval", "--engine", "reference", "--profile", "llama.cpp", "--model", str(i2s), "--ids", "1"],
              IO(io.StringIO(), err := io.StringIO()))
    assert rc == 2 and "goes into the engine spec" in err.getvalue()


def test_old_receipts_still_verify_and_unknown_majors_are_refused(tmp_path, i2s):
    from crossval.receipt import load_parity_receipt, verify_parity_receipt

    v1 = {"schema_version": "1.0.0", "tool": {"name": "bitnet-harness", "version": "0.1.0"},
          "created_at": "2026-01-01T00:00:00.000000Z",
          "model": {"path": str(i2s), "sha256": "0" * 64, "bytes": 10},
          "reference": {"libllama": "/x/build/bin/libllama.so", "api": "upstream", "version": "llama-cpp-python 0.3.36"},
          "ours": {"numerics_profile": "llama.cpp", "backend": "numpy"}, "profile": "exact", "prompt_ids": [1],
          "positions": [{"position": 0, "cosine": 1.0, "max_abs": 0.0, "kl": 0.0, "top1_ours": 3, "top1_ref": 3,
                         "top5_overlap": 1.0}], "first_divergence": None,
          "greedy": {"ours": [1], "reference": [1], "match": 1.0, "first_divergence": None},
          "verdict": "pass", "reason": "", "timings": {}}
    p = tmp_path / "v1.json"
    p.write_text(json.dumps(v1))
    r = load_parity_receipt(p)
    assert r["upgraded_from"] == "1.0.0" and r["engine"]["spec"] == "reference:llama.cpp@numpy"
    assert r["reference"]["name"] == "libllama (upstream)" and r["reference"]["numerics"] == "llama.cpp"
    assert verify_parity_receipt(r) == []
    v1["positions"][0]["cosine"] = 0.5  # a doctored pass
    p.write_text(json.dumps(v1))
    assert any("position 0 fails the exact gate" in x for x in verify_parity_receipt(load_parity_receipt(p)))
    v1["schema_version"] = "3.0.0"
    p.write_text(json.dumps(v1))
    with pytest.raises(ReceiptError, match=r"schema_version '3.0.0': this harness reads majors \[1, 2\]"):
        load_parity_receipt(p)


def test_a_test_meeting_a_missing_capability_is_skipped_with_the_reason(pytester):
    pytester.makepyfile(f"""
        import sys
        from bitnet.engines import open_engine

        def test_needs_tokenize():
            e = open_engine('cmd:"{sys.executable}" "{MISBEHAVING}" describe-ok')
            e.require("tokenize")
            raise AssertionError("not reached")
    """)
    r = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    r.assert_outcomes(skipped=1)
    assert "cannot tokenize: the engine declares it cannot" in r.stdout.str()
