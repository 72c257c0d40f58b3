"""`bitnet convert` (AC34): an HF BitNetForCausalLM checkpoint to GGUF.

Synthetic checkpoints are written by `bitnet.convert.synthetic` (plain safetensors, no torch) or
by transformers' own classes (`[hf]` extra; skipped without it). Byte identity with the upstream
converters is in tests/test_convert_upstream.py; here: every type validates and runs, the
numerics agree across types, the HF model itself is an oracle (exact gate), the tokenizer
round-trips, bad checkpoints are typed errors with exit 2, and output is atomic.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from bitnet.cli import IO
from bitnet.cli import main as bitnet_main
from bitnet.convert import CheckpointError, convert
from bitnet.convert.synthetic import write_checkpoint
from bitnet.convert.ternarize import absmean, ternarize_master
from bitnet.gguf.reader import GGUFReader
from tests._cli import run_cli as cli

pytestmark = pytest.mark.ac34
PROMPT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330]
TYPES = ["i2_s", "tl1", "tl2", "tq1_0", "tq2_0", "f16", "f32"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("hf") / "tiny-bf16", "tiny", dtype="bf16", seed=1)


@pytest.fixture(scope="module")
def converted(ckpt, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf")
    paths = {}
    for t in TYPES:
        rc, o, e = cli("convert", str(ckpt), str(out / f"{t}.gguf"), "--type", t, "--absmean", "exact", "-q")
        assert rc == 0, e
        assert f"arch bitnet-b1.58, {t}, master weights, absmean exact" in o
        paths[t] = out / f"{t}.gguf"
    return paths


def _logits(path: Path, profile: str = "reference") -> np.ndarray:
    from bitnet.engines import open_engine

    e = open_engine(f"reference:{profile}")
    e.load(path)
    return np.asarray(e.logits(PROMPT))


@pytest.mark.parametrize("typ", TYPES)
def test_every_type_validates(converted, typ):
    rc, _, e = cli("validate", str(converted[typ]))
    assert rc == 0, e


def test_types_hold_the_same_weights(ckpt, converted):
    """Every file holds the same ternary values and scale per projection, read back through the
    harness's own loader: the codes decoded from I2_S/TL1/TL2/TQ and the signs of F16/F32 are
    identical, and so is the recomputed absmean ternarisation of the checkpoint itself."""
    from bitnet.convert.checkpoint import Checkpoint
    from bitnet.quant.weights import load_weight

    readers = {t: GGUFReader(p) for t, p in converted.items()}
    try:
        with Checkpoint(ckpt) as ck:
            for hf, g in (("self_attn.k_proj", "attn_k"), ("mlp.down_proj", "ffn_down")):
                tr = ternarize_master(ck.raw(f"model.layers.1.{hf}.weight"), "BF16", "exact")
                for t, r in readers.items():
                    w = load_weight(r, f"blk.1.{g}.weight")
                    if w.is_ternary:
                        vals = w.values(0, w.out_features)
                        if w.scale is not None:  # I2_S / TL: the per-tensor scale, exactly
                            assert np.float32(w.scale) == tr.scale, t
                        else:  # TQ: every block's d is the scale rounded to f16
                            assert np.all(w.format.block_scales(w) == np.float16(tr.scale)), t
                    else:
                        f = w.float_rows(0, w.out_features)
                        vals = np.sign(f).astype(np.int8)
                        assert np.all(np.abs(f[vals != 0]) == np.float32(np.asarray(tr.scale, w.raw.dtype))), t
                    assert np.array_equal(vals, tr.t), (t, g)
    finally:
        for r in readers.values():
            r.close()


def test_packed_types_compute_identically(converted):
    """I2_S and TL1/TL2 run the same integer dot products: identical logits."""
    ref = _logits(converted["i2_s"])
    for t in ("tl1", "tl2"):
        assert np.array_equal(_logits(converted[t]), ref), t


def test_tokenizer_from_tokenizer_json(converted, bitnet_model_factory):
    """The tokenizer.json the synthetic checkpoint carries is the built-in vocab: the converted
    file tokenizes exactly like a synthesised model with that vocab."""
    from bitnet.tokenizer import load_tokenizer

    synth = bitnet_model_factory(arch="bitnet-b1.58", fmt="f32", seed=0)
    with GGUFReader(converted["i2_s"]) as a, GGUFReader(synth) as b:
        assert a.get("tokenizer.ggml.pre") == "llama-bpe"
        ta, tb = load_tokenizer(a), load_tokenizer(b)
    for text in ["the quick brown fox", "Hello, world! 123 4567", "  spaces\n\nand lines", "<|eot_id|> x"]:
        assert ta.encode(text) == tb.encode(text), text


def test_absmean_exact_is_the_correctly_rounded_mean():
    import math

    rng = np.random.default_rng(0)
    w = (rng.standard_normal(300_001) * 0.02).astype(np.float32)
    assert absmean(w, "exact") == np.float32(math.fsum(np.abs(w.astype(np.float64)).tolist()) / w.size)
    t = ternarize_master(w.reshape(1, -1).view(np.uint32).astype(np.uint32).view(np.float32), "F32", "exact")
    s = np.float32(1) / absmean(w, "exact")
    assert np.array_equal(t.t[0], np.clip(np.round(w * s), -1, 1).astype(np.int8))
    assert t.scale == np.float32(1) / s


def test_absmean_torch_matches_the_model_definition():
    torch = pytest.importorskip("torch", reason="absmean torch needs the [hf] extra")
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((96, 512)) * 0.03).astype(np.float32)
    # transformers' WeightQuant.forward, as written there
    wt = torch.from_numpy(w)
    scale = 1.0 / wt.abs().mean().clamp_(min=1e-5)
    hf = ((wt * scale).round().clamp(-1, 1) / scale).numpy()
    tr = ternarize_master(w, "F32", "torch")
    assert np.array_equal(tr.folded().view(np.uint32), hf.view(np.uint32))  # signed zeros included


def test_packed_checkpoint_against_hf_transformers(tmp_path):
    """The packed offline form (BitLinear: y = (q @ w) / (weight_scale * s)) loaded by
    transformers itself is the oracle: our logits on the converted I2_S file pass `exact`.
    bitnet.cpp's converter stores weight_scale as the I2_S scale, which this would fail."""
    pytest.importorskip("torch", reason="the hf: engine needs the [hf] extra")
    pytest.importorskip("transformers", reason="the hf: engine needs the [hf] extra")
    from bitnet.engines import open_engine
    from crossval.pair import compare_engines

    ck = write_checkpoint(tmp_path / "packed", "tiny", form="packed", seed=4)
    out = convert(ck, tmp_path / "packed.gguf", "i2_s")
    assert out.weights == "packed"
    c = compare_engines(open_engine(f"hf:{ck}"), open_engine("reference:reference"), out.path, PROMPT,
                        gate="exact", n_greedy=4)
    assert c.verdict == "pass", c.result.reason


def test_checkpoint_saved_by_transformers(tmp_path, bitnet_model_factory):
    """A checkpoint written by transformers' own `save_pretrained` (BitNetForCausalLM, packed
    BitLinear weights) converts back to a model that passes `exact` against the GGUF it was
    built from."""
    pytest.importorskip("torch", reason="needs the [hf] extra")
    pytest.importorskip("transformers", reason="needs the [hf] extra")
    from bitnet.convert.synthetic import tokenizer_json
    from bitnet.engines import open_engine
    from bitnet.engines.hf import build_from_gguf
    from crossval.pair import compare_engines

    model = bitnet_model_factory(arch="bitnet-b1.58", fmt="i2_s", seed=2)
    ck = tmp_path / "saved"
    build_from_gguf(model).save_pretrained(ck)
    tok, tcfg, _ = tokenizer_json()
    (ck / "tokenizer.json").write_text(json.dumps(tok))
    (ck / "tokenizer_config.json").write_text(json.dumps(tcfg))
    out = convert(ck, tmp_path / "back.gguf", "i2_s")
    assert out.weights.startswith("packed")
    np.testing.assert_allclose(_logits(out.path), _logits(model), rtol=0, atol=1e-4)
    c = compare_engines(open_engine(f"hf:{ck}"), open_engine("reference:reference"), out.path, PROMPT,
                        gate="exact", n_greedy=0)
    assert c.verdict == "pass", c.result.reason


# -- bad checkpoints: typed errors, exit 2, one line ----------------------------------------------
def _edit_config(d: Path, **changes) -> None:
    cfg = json.loads((d / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))


def _rewrite_header(d: Path, edit) -> None:
    p = d / "model.safetensors"
    raw = p.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * (n - len(new)) if len(new) <= n else b""
    assert len(new) == n, "edit must not grow the header"
    p.write_bytes(raw[:8] + new + raw[8 + n:])


def _rename(old: str, new: str):
    def edit(h: dict) -> None:
        h[new] = h.pop(old)
    return edit


BAD = {
    "missing-key": (lambda d: _edit_config(d, hidden_size=None), "missing config key(s) hidden_size"),
    "unsupported-arch": (lambda d: _edit_config(d, architectures=["LlamaForCausalLM"]), "architectures"),
    "wrong-shape": (lambda d: _edit_config(d, intermediate_size=768), "expected [768, 256]"),
    "missing-tensor": (lambda d: _rewrite_header(d, _rename("model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.up_pro.weight")),
                       "model.layers.1.mlp.up_proj.weight' is missing"),
    "bad-activation": (lambda d: _edit_config(d, hidden_act="gelu"), "hidden_act = 'gelu'"),
    "bad-header": (lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 16), "header length"),
    "no-tokenizer": (lambda d: (d / "tokenizer.json").unlink(), "neither tokenizer.json nor tokenizer.model"),
    "heads": (lambda d: _edit_config(d, num_key_value_heads=3), "not a multiple of num_key_value_heads"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_checkpoints_are_typed_errors_with_exit_2(tmp_path, case):
    d = write_checkpoint(tmp_path / "ck", "tiny", seed=0)
    breaker, needle = BAD[case]
    breaker(d)
    with pytest.raises(CheckpointError, match=None) as ei:
        convert(d, tmp_path / "out.gguf", "i2_s", absmean="exact")
    assert needle in str(ei.value)
    rc, o, e = cli("convert", str(d), str(tmp_path / "out.gguf"), "--type", "i2_s", "--absmean", "exact")
    assert rc == 2 and o == "" and e.count("\n") == 1 and e.startswith("bitnet convert: error:"), e
    assert needle in e
    assert not (tmp_path / "out.gguf").exists()


def test_arch_whose_ffn_differs_is_refused_unless_asked(ckpt, tmp_path):
    """A relu2 checkpoint as arch `bitnet` (llama.cpp's graph hard-codes SiLU) is what llama.cpp's
    converter writes; ours writes it only when --arch says so, with a note."""
    rc, _, e = cli("convert", str(ckpt), str(tmp_path / "a.gguf"), "--type", "i2_s", "--arch", "bitnet")
    assert rc == 2 and "invalid choice" not in e and "bitnet-b1.58" in e
    rc, o, e = cli("convert", str(ckpt), str(tmp_path / "b.gguf"), "--type", "tq2_0", "--arch", "bitnet",
                   "--absmean", "exact", "-q")
    assert rc == 0 and "computes the FFN with silu" in e and "arch bitnet" in o


def test_failure_mid_write_leaves_the_previous_file(ckpt, tmp_path):
    """A TL kernel config without an entry for one shape fails while tensors stream: the target
    keeps its old bytes and no temporary file is left."""
    target = tmp_path / "model.gguf"
    target.write_bytes(b"previous")
    ini = tmp_path / "partial.ini"
    ini.write_text("[Kernels_0]\nm = 256\nk = 256\nbm = 128\nbk = 64\nbmm = 32\n")
    rc, _, e = cli("convert", str(ckpt), str(target), "--type", "tl1", "--kernel-config", str(ini), "--absmean", "exact")
    assert rc == 2 and "no entry for M=128, K=256" in e, e
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf", "partial.ini"]


def test_kernel_config_is_recorded_and_used(ckpt, tmp_path, converted):
    """--kernel-config tiles by the given ini and records it: the file decodes without it."""
    with GGUFReader(converted["tl1"]) as r:
        ini = r.get("bitnet_harness.tl_kernel_config")
    changed = ini.replace("bk = 128", "bk = 64")
    assert changed != ini
    (tmp_path / "k.ini").write_text(changed)
    out = convert(ckpt, tmp_path / "k.gguf", "tl1", kernel_config=tmp_path / "k.ini", absmean="exact")
    with GGUFReader(out.path) as r:
        assert r.get("bitnet_harness.tl_kernel_config") == changed
    np.testing.assert_array_equal(_logits(out.path), _logits(converted["tl1"]))


# -- against libllama (pytest --crossval --bitnet-cpp-dir=DIR) --------------------------------------
@pytest.fixture(scope="module")
def upstream_dir(bitnet_cpp_dir):
    from crossval.reference import locate

    if locate(bitnet_cpp_dir).api != "upstream":
        pytest.skip("arch bitnet TQ/F16 files need upstream llama.cpp; the reference given is bitnet.cpp's fork")
    return bitnet_cpp_dir


@pytest.mark.crossval
@pytest.mark.parametrize("typ", ["tq1_0", "tq2_0", "f16"])
def test_converted_model_passes_exact_against_libllama(upstream_dir, ckpt, tmp_path, typ, monkeypatch):
    """The converted file (arch bitnet, as llama.cpp's converter writes it) loads in libllama and
    our logits pass the exact gate against its, greedy continuation included, in strict mode."""
    from crossval.compare import crossval_model

    monkeypatch.setenv("BITNET_STRICT_MODE", "1")
    out = convert(ckpt, tmp_path / f"{typ}.gguf", typ, arch="bitnet", absmean="exact")
    r = crossval_model(upstream_dir, out.path, PROMPT, profile="exact", numerics="llama.cpp", n_greedy=8, strict=True)
    assert r.verdict == "pass", r.reason
    assert r.greedy_match == 1.0


@pytest.mark.crossval
def test_converted_tokenizer_matches_libllama(upstream_dir, ckpt, tmp_path):
    """The tokenizer metadata written from tokenizer.json tokenizes like libllama does."""
    from crossval.compare import tokenizer_parity

    out = convert(ckpt, tmp_path / "tok.gguf", "tq2_0", arch="bitnet", absmean="exact")
    texts = ["the quick brown fox", "Hello, world! 123 4567 89", "  spaces\n\nand\tlines", "don't I'll we've",
             "<|begin_of_text|>x<|eot_id|>", "naïve café 日本"]
    for parse_special in (False, True):
        bad, _, _ = tokenizer_parity(upstream_dir, out.path, texts, parse_special=parse_special)
        assert not bad, bad


def test_howto_commands_run(tmp_path, monkeypatch):
    """docs/how-to/convert-an-hf-checkpoint.md: the block marked convert-doc-test runs as written."""
    import re
    import shlex

    from bitnet.convert.synthetic import main as synthetic_main

    md = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "convert-an-hf-checkpoint.md"
    (block,) = re.findall(r"<!-- convert-doc-test -->\s*```bash\n(.*?)```", md.read_text(), re.S)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BITNET_CACHE_DIR", str(tmp_path / "cache"))
    for line in block.strip().splitlines():
        argv = shlex.split(line)
        o, e = io.StringIO(), io.StringIO()
        if argv[:3] == ["python", "-m", "bitnet.convert.synthetic"]:
            rc = synthetic_main(argv[3:], IO(o, e))
        else:
            assert argv[0] == "bitnet", line
            rc = bitnet_main(argv[1:], IO(o, e))
        assert rc == 0, f"`{line}` exited {rc}: {e.getvalue()}"


@pytest.mark.slow
def test_2b4t_shape_converts_under_4_gib_peak_rss(tmp_path):
    """Streaming: a 2B-4T-shape bf16 checkpoint (~4.8 GB) converts to I2_S with a peak resident
    set under 4 GiB (the child process's getrusage maximum; torch is imported for the absmean)."""
    import os
    import sys

    d = write_checkpoint(tmp_path / "ck", "2b-4t-shape", dtype="bf16", seed=0)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.execvp(sys.executable, [sys.executable, "-m", "bitnet", "convert", str(d), str(tmp_path / "o.gguf"),
                                   "--type", "i2_s", "-q"])
    _, status, usage = os.wait4(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert usage.ru_maxrss * 1024 < 4 * 2**30, f"peak RSS {usage.ru_maxrss / 2**20:.2f} GiB"
    with GGUFReader(tmp_path / "o.gguf") as r:
        assert r.get("bitnet-b1.58.block_count") == 30 and len(r.tensors) == 30 * 11 + 2


@pytest.mark.slow
def test_llama3_tokenizer_json_round_trips(tmp_path):
    """LLaMA 3's vocabulary (llama.cpp's ggml-vocab-llama-bpe.gguf, copied by crossval.setup)
    written as an HF tokenizer.json converts back to the same tokens, types, merges, pre type
    and special ids llama.cpp's converter wrote into that file."""
    from bitnet.convert.synthetic import tokenizer_json
    from bitnet.convert.tokenizer_json import tokenizer_metadata
    from bitnet.files.cache import cache_dir

    vocab = next(iter(sorted(cache_dir("reference").glob("*/vocab/ggml-vocab-llama-bpe.gguf"))), None)
    if vocab is None:
        pytest.skip("ggml-vocab-llama-bpe.gguf not found (python -m crossval.setup copies it)")
    with GGUFReader(vocab) as r:
        tokens = list(r.get("tokenizer.ggml.tokens"))
        types = [int(t) for t in r.get("tokenizer.ggml.token_type")]
        merges = list(r.get("tokenizer.ggml.merges"))
        bos, eos = r.get("tokenizer.ggml.bos_token_id"), r.get("tokenizer.ggml.eos_token_id")
    tok, _, _ = tokenizer_json()
    tok["model"]["vocab"] = {t: i for i, (t, ty) in enumerate(zip(tokens, types, strict=True)) if ty == 1}
    tok["model"]["merges"] = [m.split(" ") for m in merges]  # the pair form newer tokenizers save
    tok["added_tokens"] = [{"id": i, "content": t, "special": True} for i, (t, ty) in enumerate(zip(tokens, types, strict=True))
                           if ty == 3]
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": tokens[bos], "eos_token": {"content": tokens[eos]}}))
    (tmp_path / "config.json").write_text("{}")
    rows = {k: v for k, v, _, _ in tokenizer_metadata(tmp_path, len(tokens))}
    assert rows["tokenizer.ggml.pre"] == "llama-bpe" and rows["tokenizer.ggml.model"] == "gpt2"
    assert rows["tokenizer.ggml.tokens"] == tokens
    assert rows["tokenizer.ggml.token_type"] == types
    assert rows["tokenizer.ggml.merges"] == merges
    assert (rows["tokenizer.ggml.bos_token_id"], rows["tokenizer.ggml.eos_token_id"]) == (bos, eos)


def _spm_model_bytes(tokens: list[str], scores: list[float], types: list[int]) -> bytes:
    """A protobuf ModelProto with only its pieces (field 1), written here independently of the
    reader under test."""
    import struct

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    def ld(field: int, payload: bytes) -> bytes:
        return varint(field << 3 | 2) + varint(len(payload)) + payload

    out = bytearray()
    for t, s, ty in zip(tokens, scores, types, strict=True):
        piece = ld(1, t.encode("utf-8")) + varint(2 << 3 | 5) + struct.pack("<f", s)
        if ty != 1:
            piece += varint(3 << 3) + varint(ty)
        out += ld(1, piece)
    return bytes(out)


def test_sentencepiece_tokenizer_model(tmp_path):
    """A checkpoint with a SentencePiece tokenizer.model (LLaMA 2's vocabulary, from llama.cpp's
    ggml-vocab-llama-spm.gguf) converts to the tokens, scores, types and ids llama.cpp's converter
    wrote there, and the converted model tokenizes like that file."""
    from bitnet.files.cache import cache_dir
    from bitnet.tokenizer import load_tokenizer

    vocab = next(iter(sorted(cache_dir("reference").glob("*/vocab/ggml-vocab-llama-spm.gguf"))), None)
    if vocab is None:
        pytest.skip("ggml-vocab-llama-spm.gguf not found (python -m crossval.setup copies it)")
    with GGUFReader(vocab) as r:
        tokens = list(r.get("tokenizer.ggml.tokens"))
        scores = [float(x) for x in r.get("tokenizer.ggml.scores")]
        types = [int(x) for x in r.get("tokenizer.ggml.token_type")]
        ids = {k: r.get(f"tokenizer.ggml.{k}") for k in ("bos_token_id", "eos_token_id", "unknown_token_id")}
    ck = write_checkpoint(tmp_path / "spm", "tiny", seed=0)
    _edit_config(ck, vocab_size=len(tokens), bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"])
    (ck / "tokenizer.json").unlink()
    (ck / "tokenizer_config.json").write_text(json.dumps({"unk_token": tokens[ids["unknown_token_id"]],
                                                          "add_bos_token": True}))
    (ck / "tokenizer.model").write_bytes(_spm_model_bytes(tokens, scores, types))
    _rewrite_embeddings_rows(ck, len(tokens))
    out = convert(ck, tmp_path / "spm.gguf", "i2_s", absmean="exact")
    with GGUFReader(out.path) as a, GGUFReader(vocab) as b:
        assert a.get("tokenizer.ggml.model") == "llama" and a.get("tokenizer.ggml.pre") == "default"
        assert list(a.get("tokenizer.ggml.tokens")) == tokens
        assert [int(x) for x in a.get("tokenizer.ggml.token_type")] == types
        assert np.array_equal(np.asarray(a.get("tokenizer.ggml.scores"), np.float32), np.asarray(scores, np.float32))
        assert {k: a.get(f"tokenizer.ggml.{k}") for k in ids} == ids
        ta, tb = load_tokenizer(a), load_tokenizer(b)
        for text in ["the quick brown fox", " Hello, world! 123", "naïve café 日本\n\tend"]:
            assert ta.encode(text) == tb.encode(text), text


def _rewrite_embeddings_rows(ck: Path, rows: int) -> None:
    """Rewrite the checkpoint's embedding with `rows` rows (another vocab size)."""
    from bitnet.convert.safetensors_io import SafetensorsFile
    from bitnet.convert.synthetic import _write_safetensors

    p = ck / "model.safetensors"
    with SafetensorsFile(p) as f:
        tensors = []
        for name, info in f.tensors.items():
            data = f.raw(name)
            if name == "model.embed_tokens.weight":
                data = np.resize(data, (rows, data.shape[1]))
            tensors.append((name, info.dtype, data.shape, lambda d=data: iter([d])))
    _write_safetensors(p, tensors)


def test_progress_bar_on_a_terminal(ckpt, tmp_path):
    """On a terminal, convert draws what it converts and a bar over the tensor bytes on stderr;
    stdout keeps only the result line."""
    import re
    import sys

    from tests.test_progress import run_with_pty_stderr

    rc, out, err = run_with_pty_stderr([sys.executable, "-m", "bitnet", "convert", str(ckpt), "m.gguf", "--type",
                                        "i2_s", "--absmean", "exact"], tmp_path)
    assert rc == 0, err
    assert f"converting {ckpt} -> m.gguf (i2_s)" in err
    assert re.search(r"\d:\d\d:\d\d", err), err
    assert out.startswith("wrote m.gguf") and "converting" not in out
