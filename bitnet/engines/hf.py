"""`hf:` / `hf:DIR`: HF transformers `BitNetForCausalLM` as an independent oracle.

- `hf:` builds the model in memory from the GGUF's own weights: every projection becomes HF's
  offline `BitLinear` (2-bit codes packed four rows per byte, `weight_scale` = 1 / the tensor
  scale, per-token absmax int8 activations rounded half to even). The ternary codes are read
  here from the bytes, independently of bitnet.quant: I2_S (x86 layout) from its spec
  (../shared/spec/FORMATS.md), TQ1_0/TQ2_0 through gguf-py's dequantizers, float weights by
  their sign and one scale per tensor. Everything else (norms, rope, attention, ReLU^2 or SiLU,
  tied lm_head) is transformers' own code.
- `hf:DIR` loads an HF checkpoint folder (config.json + safetensors) with `from_pretrained`,
  offline; the `model` given to `load` is then only the file the comparison names.

Needs the `[hf]` extra (torch, transformers, safetensors); without it, opening an `hf:` engine
raises CapabilityMissing (a skip with the reason). Numerics claimed: `reference` (the model's
own math), which our `reference` profile must match under the `exact` gate.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.engines.protocol import (
    Capabilities,
    CapabilityMissing,
    Engine,
    EngineError,
    EngineInfo,
    EngineOutput,
    TimedRun,
    check_logits,
)

ARCHS = ("bitnet-b1.58", "bitnet")
FORMATS = ("f32", "f16", "i2_s", "tq1_0", "tq2_0")
PROJ = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj"}
NORMS = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
         "attn_sub_norm": "self_attn.attn_sub_norm", "ffn_sub_norm": "mlp.ffn_sub_norm"}


def _torch():
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # BitLinear's @torch.compile would build C++ at first call
    try:
        import torch
        import transformers
    except ImportError as e:
        raise CapabilityMissing(f"the hf: engine needs the [hf] extra (pip install torch==2.13.0; "
                                f"pip install transformers safetensors): {e}") from None
    return torch, transformers


def from_spec(spec: str, arg: str) -> HFEngine:
    _torch()
    return HFEngine(spec, arg or None)


# -- the weights, decoded independently of bitnet.quant ----------------------------------------
def i2s_x86_codes(raw: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, float]:
    """Microsoft I2_S, x86 layout (spec): element j of 128-block i sits in byte 32*i + j%32 at
    shift 6 - 2*(j//32); codes 0/1/2 = -1/0/+1; the f32 scale follows the n/4 code bytes."""
    n = rows * cols
    b = np.asarray(raw, np.uint8)
    if b.size != n // 4 + 32 or n % 128:
        raise EngineError(f"hf: a {rows}x{cols} tensor stored as type 36 in {b.size} bytes is not Microsoft I2_S "
                          f"(n/4 + 32 = {n // 4 + 32} bytes, 128-element blocks); the hf: engine reads {', '.join(FORMATS)}")
    packed = b[: n // 4].reshape(-1, 32)  # [block, byte]
    codes = np.stack([(packed >> s) & 3 for s in (6, 4, 2, 0)], axis=1)  # [block, group, byte]
    scale = float(b[n // 4: n // 4 + 4].view("<f4")[0])
    return codes.reshape(rows, cols), scale


def _ternary_of_float(w: np.ndarray, name: str) -> tuple[np.ndarray, float]:
    """A float matrix that holds ternary x one scale -> (codes 0/1/2, scale); anything else is
    not a BitNet projection and is refused."""
    a = np.abs(w[w != 0])
    scale = float(a.max()) if a.size else 1.0
    if a.size and not np.allclose(a, scale, rtol=1e-3):
        raise EngineError(f"hf: {name} is not ternary x one scale (|w| ranges {a.min():.6g}..{scale:.6g}); "
                          "HF BitLinear cannot hold it")
    return (np.sign(w) + 1).astype(np.uint8), scale


def _projection(reader, name: str, rows: int, cols: int) -> tuple[np.ndarray, float]:
    t = reader.tensor(name)
    kind = t.type_name.lower()
    if kind == "i2_s":
        return i2s_x86_codes(reader.raw(t), rows, cols)
    if kind in ("f32", "f16"):
        return _ternary_of_float(reader.array(t).astype(np.float32).reshape(rows, cols), name)
    if kind in ("tq1_0", "tq2_0"):
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        w = dequantize(_raw(reader, t), GGMLQuantizationType[kind.upper()]).reshape(rows, cols)
        return _ternary_of_float(w.astype(np.float32), name)
    raise EngineError(f"hf: {name} is {t.type_name}; the hf: engine reads {', '.join(FORMATS)}")


def _raw(reader, t) -> np.ndarray:
    return np.asarray(reader.raw(t), np.uint8).reshape(-1)


class HFEngine(Engine):
    kind = "hf"

    def __init__(self, spec: str, checkpoint: str | None):
        super().__init__(spec)
        self.checkpoint = Path(checkpoint).expanduser() if checkpoint else None
        self.capabilities = Capabilities(
            logits=True, greedy=True, tokenize=False, layers=True, layer_forcing=True,
            loads=None if self.checkpoint else tuple((a, f) for a in ARCHS for f in FORMATS),
            why_not={"tokenize": "the hf: engine is judged on token ids (the GGUF carries no HF tokenizer)"})
        self._model: Any = None
        self._load_s: float | None = None

    def load(self, model) -> None:
        super().load(model)
        torch, transformers = _torch()
        t0 = time.perf_counter()
        try:
            if self.checkpoint is not None:
                if not (self.checkpoint / "config.json").is_file():
                    raise EngineError(f"{self.spec}: {self.checkpoint} has no config.json")
                self._model = transformers.BitNetForCausalLM.from_pretrained(
                    str(self.checkpoint), dtype=torch.float32, local_files_only=True)
            else:
                assert self.model is not None  # set by super().load
                self._model = build_from_gguf(self.model)
        except EngineError:
            raise
        except Exception as e:  # transformers refusing a folder or a config is this engine breaking
            raise EngineError(f"{self.spec}: {type(e).__name__}: {e}") from None
        self._model.eval()
        self._load_s = time.perf_counter() - t0

    def _m(self):
        if self._model is None:
            raise EngineError(f"{self.spec}: load(model) first")
        return self._model

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        torch, _ = _torch()
        with torch.no_grad():
            out = self._m()(torch.tensor([list(map(int, ids))]), use_cache=False)
        return check_logits(self.spec, out.logits[0].float().numpy().astype(np.float32), len(ids))

    def greedy(self, ids: Sequence[int], n: int) -> list[int]:
        torch, _ = _torch()
        x = torch.tensor([list(map(int, ids))])
        with torch.no_grad():
            g = self._m().generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1,
                                   pad_token_id=0, eos_token_id=None)
        return [int(t) for t in g[0, len(ids):].tolist()]

    def evaluate(self, ids: Sequence[int], n_greedy: int = 0) -> EngineOutput:
        t0 = time.perf_counter()
        lg = self.logits(ids)
        return EngineOutput(lg, self.greedy(ids, n_greedy) if n_greedy else [], time.perf_counter() - t0)

    def layer_outputs(self, ids: Sequence[int]) -> np.ndarray:
        return self._layers(ids, None)

    def forced_layer_outputs(self, ids: Sequence[int], l_out: np.ndarray) -> np.ndarray:
        return self._layers(ids, np.asarray(l_out, np.float32))

    def _layers(self, ids: Sequence[int], l_out: np.ndarray | None) -> np.ndarray:
        """One forward pass with a hook on every decoder layer recording its output; with
        l_out, a pre-hook on layer i > 0 also replaces its input by l_out[i - 1] (transformers'
        own layers, norms, rope and attention run unchanged; only their inputs are forced)."""
        torch, _ = _torch()
        m = self._m()
        layers = list(m.model.layers)
        if l_out is not None and len(l_out) != len(layers):
            raise EngineError(f"{self.spec}: {len(l_out)} layer inputs given for a {len(layers)}-layer model")
        got: dict[int, np.ndarray] = {}
        hooks = []
        for i, layer in enumerate(layers):
            def record(mod, args, out, i=i):
                h = out[0] if isinstance(out, tuple) else out
                got[i] = h[0].detach().float().numpy().astype(np.float32)
            hooks.append(layer.register_forward_hook(record))
            if l_out is not None and i > 0:
                def force(mod, args, kwargs, i=i):
                    x = torch.from_numpy(np.ascontiguousarray(l_out[i - 1]))[None].to(args[0].dtype if args
                                                                                     else kwargs["hidden_states"].dtype)
                    if args:
                        return (x, *args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": x}
                hooks.append(layer.register_forward_pre_hook(force, with_kwargs=True))
        _hooked_forward(torch, m, ids, hooks)
        return np.stack([got[i] for i in range(len(layers))])

    def named_outputs(self, ids: Sequence[int]) -> dict[tuple[int, str], np.ndarray]:
        """The sub-block boundaries of every layer in one forward pass, keyed (layer, our op
        name) (crossval.layers.SUBLAYER_OPS), position-major [T, n]: the reference side of
        sub-layer forcing. Read by hooks on transformers' own modules (nothing re-implemented):
        input_layernorm's output (attn_norm), attn_sub_norm's input and output (attn_out,
        attn_sub_norm), o_proj's output (attn_o), post_attention_layernorm's input and output
        (attn_residual, ffn_norm), ffn_sub_norm's input and output (ffn_gated, ffn_sub_norm),
        the MLP's output (ffn_down) and the layer's (l_out)."""
        torch, _ = _torch()
        m = self._m()
        got: dict[tuple[int, str], np.ndarray] = {}

        def keep(key, t):
            t = t[0] if isinstance(t, tuple) else t
            got[key] = t[0].detach().float().numpy().astype(np.float32).reshape(t.shape[1], -1)

        hooks = []
        for i, layer in enumerate(m.model.layers):
            outs = {"attn_norm": layer.input_layernorm, "attn_sub_norm": layer.self_attn.attn_sub_norm,
                    "attn_o": layer.self_attn.o_proj, "ffn_norm": layer.post_attention_layernorm,
                    "ffn_sub_norm": layer.mlp.ffn_sub_norm, "ffn_down": layer.mlp, "l_out": layer}
            ins = {"attn_out": layer.self_attn.attn_sub_norm, "attn_residual": layer.post_attention_layernorm,
                   "ffn_gated": layer.mlp.ffn_sub_norm}
            for op, mod in outs.items():
                hooks.append(mod.register_forward_hook(lambda mod, a, out, k=(i, op): keep(k, out)))
            for op, mod in ins.items():
                hooks.append(mod.register_forward_pre_hook(lambda mod, a, k=(i, op): keep(k, a[0])))
        _hooked_forward(torch, m, ids, hooks)
        return got

    def timed_greedy(self, ids: Sequence[int], n: int) -> TimedRun:
        """Greedy generation through transformers' KV cache, each forward call timed here, in the
        harness's process (the model runs in it), after an untimed warm-up."""
        torch, _ = _torch()
        import inspect

        m, tokens, steps = self._m(), [], []
        # the KV cache argument and output were renamed (past_key_values -> cache in transformers 5.x)
        kv = "cache" if "cache" in inspect.signature(m.forward).parameters else "past_key_values"

        def kv_of(out):
            return getattr(out, kv)

        with torch.no_grad():
            warm = m(input_ids=torch.tensor([list(map(int, ids))]), use_cache=True)  # warm-up, not timed
            m(input_ids=warm.logits[:, -1:].argmax(-1), use_cache=True, **{kv: kv_of(warm)})
            t = time.perf_counter()
            out = m(input_ids=torch.tensor([list(map(int, ids))]), use_cache=True)
            prefill = time.perf_counter() - t
            best = int(out.logits[0, -1].argmax())
            for _ in range(n):
                tokens.append(best)
                t = time.perf_counter()
                out = m(input_ids=torch.tensor([[best]]), use_cache=True, **{kv: kv_of(out)})
                steps.append(time.perf_counter() - t)
                best = int(out.logits[0, -1].argmax())
        load = float(self._load_s or 0.0)
        here = "perf_counter in the harness's process, which runs the model"
        why_cpu = "torch runs its own intra-op threads: the calling thread's CPU time is not the work's"
        return TimedRun(tokens, load + prefill + sum(steps), load_s=load, prefill_s=prefill, decode_step_s=steps,
                        how={"timings.load_s": f"building the model from the file, {here}",
                             "timings.prefill_s": f"the one prompt forward call, {here}",
                             "timings.decode_step_s": f"each one-token forward call through the KV cache, {here}",
                             "timings.total_s": "load + prefill + decode steps (the harness's figures summed)"},
                        why_not={"peak_rss_bytes": "the model runs in the harness's own process, whose peak RSS "
                                                   "also holds the harness's copy of the model",
                                 "threads": "torch chooses its own thread count",
                                 "timings.prefill_cpu_s": why_cpu, "timings.decode_step_cpu_s": why_cpu})

    def describe(self) -> EngineInfo:
        torch, transformers = _torch()
        src = f"checkpoint {self.checkpoint}" if self.checkpoint else "built from the GGUF's weights"
        return EngineInfo(self.spec, "transformers BitNetForCausalLM (offline BitLinear)",
                          f"transformers {transformers.__version__}", f"torch {torch.__version__}, float32, {src}",
                          "reference")

    def close(self) -> None:
        self._model = None


def build_from_gguf(path: Path):
    """BitNetForCausalLM with the GGUF's weights, projections as offline BitLinear."""
    torch, transformers = _torch()
    from transformers.integrations.bitnet import BitLinear, pack_weights

    from bitnet.gguf.reader import GGUFReader

    with GGUFReader(path) as r:
        arch = str(r.get("general.architecture"))
        if arch not in ARCHS:
            raise EngineError(f"hf: {path}: architecture {arch!r}; the hf: engine builds {', '.join(ARCHS)}")

        def key(k, default=None):
            v = r.get(f"{arch}.{k}")
            return default if v is None else v

        emb = r.array(r.tensor("token_embd.weight")).astype(np.float32)
        n_vocab, n_embd = emb.shape
        names = {t.name for t in r.tensors}
        act = str(key("hidden_activation", "relu2" if arch == "bitnet-b1.58" else "silu"))
        act = {"relu_sqr": "relu2", "relu2": "relu2", "silu": "silu", "gelu": "gelu"}.get(act, act)
        cfg = transformers.BitNetConfig(
            vocab_size=n_vocab, hidden_size=n_embd, intermediate_size=int(key("feed_forward_length")),
            num_hidden_layers=int(key("block_count")), num_attention_heads=int(key("attention.head_count")),
            num_key_value_heads=int(key("attention.head_count_kv")), hidden_act=act,
            max_position_embeddings=int(key("context_length", 4096)),
            rms_norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_parameters={"rope_type": "default", "rope_theta": float(key("rope.freq_base", 10000.0))},
            tie_word_embeddings="output.weight" not in names, attention_bias=False,
            bos_token_id=None, eos_token_id=None, pad_token_id=None)
        cfg._attn_implementation = "eager"
        model = transformers.BitNetForCausalLM(cfg).to(torch.float32)
        c = cfg
        kv = c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
        shapes = {"attn_q": (c.hidden_size, c.hidden_size), "attn_k": (kv, c.hidden_size),
                  "attn_v": (kv, c.hidden_size), "attn_output": (c.hidden_size, c.hidden_size),
                  "ffn_gate": (c.intermediate_size, c.hidden_size), "ffn_up": (c.intermediate_size, c.hidden_size),
                  "ffn_down": (c.hidden_size, c.intermediate_size)}
        with torch.no_grad():
            model.model.embed_tokens.weight.copy_(torch.from_numpy(emb))
            model.model.norm.weight.copy_(torch.from_numpy(r.array(r.tensor("output_norm.weight")).astype(np.float32)))
            if "output.weight" in names:
                model.lm_head.weight.copy_(torch.from_numpy(r.array(r.tensor("output.weight")).astype(np.float32)))
            for i, layer in enumerate(model.model.layers):
                for g, h in NORMS.items():
                    w = r.array(r.tensor(f"blk.{i}.{g}.weight")).astype(np.float32)
                    layer.get_submodule(h).weight.copy_(torch.from_numpy(w))
                for g, h in PROJ.items():
                    rows, cols = shapes[g]
                    codes, scale = _projection(r, f"blk.{i}.{g}.weight", rows, cols)
                    if f"blk.{i}.{g}.scale" in names:
                        scale *= float(r.array(r.tensor(f"blk.{i}.{g}.scale")).reshape(-1)[0])
                    bl = BitLinear(cols, rows, bias=False, dtype=torch.float32)
                    bl.weight.copy_(pack_weights(torch.from_numpy(codes.astype(np.int8) - 1)))  # it adds the 1
                    bl.weight_scale.fill_(1.0 / scale)
                    layer.set_submodule(h, bl)
        model.config.quantization_config = {"quant_method": "bitnet", "linear_class": "bitlinear",
                                            "quantization_mode": "offline", "modules_to_not_convert": ["lm_head"]}
        return model


def _hooked_forward(torch, m, ids: Sequence[int], hooks: list) -> None:
    """One forward pass of `m` over ids with `hooks` registered on its modules (they record or
    force what they were made for), then every hook removed, also when the pass fails."""
    try:
        with torch.no_grad():
            m(torch.tensor([list(map(int, ids))]), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
