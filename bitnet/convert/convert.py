"""Convert an HF BitNet checkpoint to GGUF, streaming one tensor at a time.

Every tensor is declared to the streaming `GGUFWriter` with a callable that reads it from its
safetensors shard, converts it and returns its bytes when the writer reaches it; nothing else is
kept, so peak memory is about one tensor in float32 plus its encoding (the token embedding, the
largest, is converted in row chunks into its output buffer). The file is written atomically.
Every tensor's presence, dtype and shape is checked against config.json before a byte is written.

Two GGUF layouts, each following the converter that defines it (see docs/reference/convert.md):
- `bitnet-b1.58` (microsoft/BitNet 16da220 `utils/convert-hf-to-gguf-bitnet.py`, the only
  producer of I2_S/TL1/TL2): the scale stays in the weight (I2_S/TL tail, or `t * scale` in a
  float type); token embedding F16 for I2_S/TL, F32 for float outputs; norms F32.
- `bitnet` (llama.cpp `convert_hf_to_gguf.py`, TQ1_0/TQ2_0/F16): projections hold `t * scale`
  (a TQ block's d is the scale rounded to f16); token embedding and untied output F16 for TQ
  and F16; norms F32. No `.scale` tensors. Its graph computes the FFN with SiLU (1bitLLM), so a
  relu2 checkpoint (every `BitNetForCausalLM`) is written as `bitnet-b1.58` unless `arch` says
  `bitnet`, as llama.cpp's converter does regardless.
Neither converter permutes q/k rows (the HF model's rotate-half rope is ggml's NEOX).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitnet.convert.checkpoint import (
    ACT_ARCH,
    IGNORED_SUFFIXES,
    NORMS,
    PROJECTIONS,
    Checkpoint,
    CheckpointError,
    HFConfig,
)
from bitnet.convert.safetensors_io import to_float32
from bitnet.convert.ternarize import (
    Ternary,
    packed_scale,
    resolve_absmean,
    ternarize_master,
    unpack_packed,
)
from bitnet.convert.tokenizer_json import tokenizer_metadata
from bitnet.gguf.constants import ValueType
from bitnet.gguf.writer import GGUFWriter
from bitnet.model.dims import WRITE_ORDER
from bitnet.quant import floats, tl, tq
from bitnet.quant.encoders import weight_format
from bitnet.quant.tl_config import KEY_KERNEL_CONFIG, KernelConfig, load_ini

#: output type -> the GGUF archs it can be written as (the first is the default)
TYPES: dict[str, tuple[str, ...]] = {
    "i2_s": ("bitnet-b1.58",), "tl1": ("bitnet-b1.58",), "tl2": ("bitnet-b1.58",),
    "tq1_0": ("bitnet", "bitnet-b1.58"), "tq2_0": ("bitnet", "bitnet-b1.58"),
    "f16": ("bitnet", "bitnet-b1.58"), "f32": ("bitnet", "bitnet-b1.58"),
}
ARCHS = ("bitnet", "bitnet-b1.58")
KEY_SOURCE = "bitnet_harness.convert.source"
KEY_ABSMEAN = "bitnet_harness.convert.absmean"
KEY_WEIGHTS = "bitnet_harness.convert.weights"
EMBED_CHUNK_ROWS = 4096
_ACT = {arch: act for act, arch in ACT_ARCH.items()}


@dataclass
class ConvertResult:
    path: Path
    arch: str
    type: str
    weights: str  # "master" or "packed"
    absmean: str  # "torch", "exact", or "-" (packed weights need none)
    n_tensors: int
    nbytes: int
    notes: list[str] = field(default_factory=list)


def _float_tensor(ck: Checkpoint, name: str, shape: tuple[int, ...], out: str) -> Callable[[], np.ndarray]:
    """A float tensor converted to `out` ("f32", "f16", "bf16"), row chunk by row chunk."""
    info = ck.info(name)
    if info.dtype not in ("BF16", "F16", "F32"):
        raise CheckpointError(f"{info.path}: tensor {name!r} is {info.dtype}, expected a float type")
    if info.shape != shape:
        raise CheckpointError(f"{info.path}: tensor {name!r} has shape {list(info.shape)}, expected {list(shape)} "
                              "from config.json")

    def make() -> np.ndarray:
        raw = ck.raw(name)
        if raw.ndim < 2:
            return floats.pack(to_float32(raw, info.dtype), out)
        dst = np.empty(raw.shape, floats.DTYPES[out])
        for r in range(0, raw.shape[0], EMBED_CHUNK_ROWS):
            dst[r: r + EMBED_CHUNK_ROWS] = floats.pack(to_float32(raw[r: r + EMBED_CHUNK_ROWS], info.dtype), out)
        return dst

    return make


class _Projections:
    """Reads and ternarises projections, checking shapes and form."""

    def __init__(self, ck: Checkpoint, absmean: str):
        self.ck, self.absmean = ck, absmean
        self.linear_class = ck.config.quant.get("linear_class", "bitlinear")
        self.forms: set[str] = set()

    def form(self, hf: str) -> str:
        return "packed" if self.ck.has(hf + ".weight_scale") else "master"

    def check(self, hf: str, out_f: int, in_f: int) -> None:
        info = self.ck.info(hf + ".weight")
        form = self.form(hf)
        self.forms.add(form)
        want = (out_f // 4, in_f) if form == "packed" else (out_f, in_f)
        if form == "packed" and (info.dtype not in ("U8", "I8") or out_f % 4):
            raise CheckpointError(f"{info.path}: {hf}.weight is {info.dtype} with a weight_scale; packed "
                                  f"weights are uint8 [{out_f}/4, {in_f}]")
        if form == "master" and info.dtype not in ("BF16", "F16", "F32"):
            raise CheckpointError(f"{info.path}: {hf}.weight is {info.dtype} without a weight_scale; master "
                                  "weights are float (packed ones come with <name>.weight_scale)")
        if info.shape != want:
            raise CheckpointError(f"{info.path}: tensor {hf}.weight has shape {list(info.shape)}, expected "
                                  f"{list(want)} ({form} weights of a [{out_f}, {in_f}] projection per config.json)")

    def ternary(self, hf: str, out_f: int) -> Ternary:
        info = self.ck.info(hf + ".weight")
        raw = self.ck.raw(hf + ".weight")
        if self.form(hf) == "master":
            return ternarize_master(raw, info.dtype, self.absmean)
        t = unpack_packed(raw.view(np.uint8), out_f, f"{info.path}: {hf}.weight")
        si = self.ck.info(hf + ".weight_scale")
        ws = to_float32(self.ck.raw(hf + ".weight_scale"), si.dtype)
        return Ternary(t, packed_scale(ws, self.linear_class, f"{si.path}: {hf}.weight"), "f32")


def _encode_projection(tr: Ternary, typ: str, tile_cfg: KernelConfig | None, name: str) -> np.ndarray:
    m, k = tr.t.shape
    if typ == "i2_s":
        return weight_format("i2_s").encode(tr.t, float(tr.scale)).view(np.uint8).reshape(-1)
    if typ in ("tl1", "tl2"):
        assert tile_cfg is not None
        tile = tile_cfg.find(m, k)
        if tile is None:
            raise tl.KernelConfigError(f"{name}: the kernel config ({tile_cfg.source}) has no entry for "
                                       f"M={m}, K={k}")
        enc = tl.encode_tl1 if typ == "tl1" else tl.encode_tl2
        return enc(tr.t, float(tr.scale), tile)
    if typ in ("tq1_0", "tq2_0"):
        q = tq.quantize_tq1_0 if typ == "tq1_0" else tq.quantize_tq2_0
        return q(tr.folded())
    return floats.pack(tr.folded(), typ)


def convert(
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    typ: str = "i2_s",
    *,
    arch: str | None = None,
    absmean: str = "auto",
    kernel_config: str | os.PathLike[str] | KernelConfig | None = None,
    tokenizer_pre: str | None = None,
    name: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ConvertResult:
    """Convert `model_dir` to a GGUF at `out` (written atomically)."""
    if typ not in TYPES:
        raise CheckpointError(f"output type {typ!r}; expected one of {', '.join(TYPES)}")
    if arch is not None and arch not in TYPES[typ]:
        raise CheckpointError(f"--type {typ} is written as arch {' or '.join(TYPES[typ])}, not {arch!r}")
    notes: list[str] = []
    with Checkpoint(model_dir) as ck:
        cfg = ck.config
        act_arch = ACT_ARCH[cfg.hidden_act]
        if arch is None:
            if act_arch not in TYPES[typ]:
                raise CheckpointError(
                    f"{ck.dir}: hidden_act {cfg.hidden_act} is arch {act_arch}'s FFN, but --type {typ} is "
                    f"written as arch {TYPES[typ][0]}, whose graph computes {_ACT[TYPES[typ][0]]}; pass "
                    f"--arch {TYPES[typ][0]} to write it anyway")
            arch = act_arch
        elif arch != act_arch:
            notes.append(f"arch {arch} computes the FFN with {_ACT[arch]}, this checkpoint with "
                         f"{cfg.hidden_act}: the GGUF is what the upstream converter writes, not the HF model's "
                         "function")
        projections = _Projections(ck, "-")
        shapes = _check_tensors(ck, cfg, projections)
        weights = "packed" if projections.forms == {"packed"} else "master"
        if len(projections.forms) > 1:
            raise CheckpointError(f"{ck.dir}: some projections are packed (weight_scale) and some are not")
        method = resolve_absmean(absmean) if weights == "master" else "-"
        projections.absmean = method
        tile_cfg = None
        if typ in ("tl1", "tl2"):
            if kernel_config is None:
                tile_cfg = tl.default_config(typ, sorted(set(shapes)))
            elif isinstance(kernel_config, KernelConfig):
                tile_cfg = kernel_config
            else:
                tile_cfg = load_ini(kernel_config)

        w = GGUFWriter(out)
        w.add("general.architecture", arch)
        w.add("general.name", name or ck.dir.name)
        ftype = {"i2_s": 40}.get(typ, weight_format(typ).file_type)
        w.add("general.file_type", ftype, ValueType.UINT32)
        w.add("general.quantization_version", 2, ValueType.UINT32)
        dims = {"n_vocab": cfg.vocab_size, "n_ctx": cfg.max_position_embeddings, "n_embd": cfg.hidden_size,
                "n_layer": cfg.num_hidden_layers, "n_ff": cfg.intermediate_size, "rope_dim": cfg.head_dim,
                "n_head": cfg.num_attention_heads, "n_head_kv": cfg.num_key_value_heads,
                "rms_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta}
        for d in WRITE_ORDER:
            w.add(f"{arch}.{d.key}", dims[d.name], d.gguf_type)
        for key, value, vt, et in tokenizer_metadata(ck.dir, cfg.vocab_size, tokenizer_pre):
            w.add(key, value, vt, et)
        w.add(KEY_SOURCE, f"{cfg.architecture} checkpoint {ck.dir.name}")
        w.add(KEY_WEIGHTS, weights if weights == "master" else
              f"packed ({projections.linear_class}: scale = "
              f"{'weight_scale' if projections.linear_class == 'autobitlinear' else '1 / weight_scale'})")
        w.add(KEY_ABSMEAN, method)
        if typ == "i2_s":
            for key, value in weight_format("i2_s").metadata:
                w.add(key, value)
        if tile_cfg is not None:
            w.add(KEY_KERNEL_CONFIG, tile_cfg.to_ini())

        quantized = typ in ("i2_s", "tl1", "tl2", "tq1_0", "tq2_0")
        embed_t = {"bf16": "bf16", "f32": "f32"}.get(typ, "f16")
        if arch == "bitnet-b1.58" and typ in ("f16", "f32"):
            embed_t = "f32"  # bitnet.cpp keeps TOKEN_EMBD F32 unless --quant-embd
        n_vocab, h = cfg.vocab_size, cfg.hidden_size
        gt = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
        w.add_tensor("token_embd.weight", _float_tensor(ck, "model.embed_tokens.weight", (n_vocab, h), embed_t),
                     shape=(h, n_vocab), gtype=gt[embed_t])
        w.add_tensor("output_norm.weight", _float_tensor(ck, "model.norm.weight", (h,), "f32"),
                     shape=(h,), gtype="F32")
        if not cfg.tie_word_embeddings and ck.has("lm_head.weight"):
            out_t = "f16" if quantized else typ
            if arch == "bitnet-b1.58" and quantized:
                notes.append("lm_head.weight written F16 (bitnet.cpp's converter would I2_S/TL-quantize it)")
            w.add_tensor("output.weight", _float_tensor(ck, "lm_head.weight", (n_vocab, h), out_t),
                         shape=(h, n_vocab), gtype=gt[out_t])
        for i in range(cfg.num_hidden_layers):
            for hf, g in NORMS.items():
                n = cfg.intermediate_size if g == "ffn_sub_norm" else h
                w.add_tensor(f"blk.{i}.{g}.weight", _float_tensor(ck, f"model.layers.{i}.{hf}.weight", (n,), "f32"),
                             shape=(n,), gtype="F32")
            for hf, g in PROJECTIONS.items():
                out_f, in_f = cfg.projection_shape(g)
                gname = f"blk.{i}.{g}.weight"
                enc = weight_format(typ)
                nbytes = enc.nbytes(out_f, in_f)

                def make(hf: str = f"model.layers.{i}.{hf}", gname: str = gname, out_f: int = out_f) -> np.ndarray:
                    return _encode_projection(projections.ternary(hf, out_f), typ, tile_cfg, gname)

                w.add_tensor(gname, make, shape=(in_f, out_f), gtype=enc.gtype, nbytes=nbytes)
        path = w.write(on_progress)
    return ConvertResult(Path(path), arch, typ, weights, method, len(w._tensors), os.path.getsize(path), notes)


def _check_tensors(ck: Checkpoint, cfg: HFConfig, projections: _Projections) -> list[tuple[int, int]]:
    """Check every tensor the GGUF needs is there with its shape (before anything is written),
    refuse tensors no GGUF tensor maps to; returns the projection shapes (out, in)."""
    expected = {"model.embed_tokens.weight", "model.norm.weight"}
    if not cfg.tie_word_embeddings:
        expected.add("lm_head.weight")
        ck.info("lm_head.weight")
    elif ck.has("lm_head.weight"):
        expected.add("lm_head.weight")  # a tied copy: ignored, as the converters' tensor map does
    ck.info("model.embed_tokens.weight")
    shapes = []
    for i in range(cfg.num_hidden_layers):
        for hf in NORMS:
            expected.add(f"model.layers.{i}.{hf}.weight")
            ck.info(f"model.layers.{i}.{hf}.weight")
        for hf, g in PROJECTIONS.items():
            base = f"model.layers.{i}.{hf}"
            expected.update({base + ".weight", base + ".weight_scale"})
            out_f, in_f = cfg.projection_shape(g)
            projections.check(base, out_f, in_f)
            shapes.append((out_f, in_f))
    extra = [n for n in ck.names() if n not in expected and not n.endswith(IGNORED_SUFFIXES)]
    if extra:
        raise CheckpointError(f"{ck.dir}: tensor(s) no GGUF tensor maps to: {', '.join(extra[:5])}"
                              f"{' ...' if len(extra) > 5 else ''} (is num_hidden_layers "
                              f"{cfg.num_hidden_layers} right?)")
    return shapes
