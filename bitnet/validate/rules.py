"""The rule table: one rule = one function `(ctx) -> checks`, registered under its name.

Adding a rule is adding one function here (and, when it has a bound, one envelope in
`policies/model-validation.yml`). Rules never raise on a malformed file: what they cannot
evaluate because something they depend on is missing or wrong is a `skip` check naming why
(the check that found the cause fails on its own). The catalogue with every rule's meaning is
docs/reference/validate.md.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from bitnet.validate.context import FLOAT_TENSOR_TYPES, MAX_LAYERS, Context
from bitnet.validate.policy import Envelope
from bitnet.validate.report import AppliedCorrection, Check

RuleFn = Callable[[Context], Iterator[Check]]


@dataclass(frozen=True)
class Rule:
    name: str
    fn: RuleFn
    doc: str


RULES: dict[str, Rule] = {}


def rule(name: str, doc: str) -> Callable[[RuleFn], RuleFn]:
    def deco(fn: RuleFn) -> RuleFn:
        RULES[name] = Rule(name, fn, doc)
        return fn
    return deco


def _g(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _env(rule_name: str, subject: str, env: Envelope, value: float, message: str = "") -> Check:
    st = env.status(value)
    return Check(rule_name, subject, st, _g(value), env.describe(), message if st != "pass" else "", env.source)


def _specs(ctx: Context, role: str | None = None) -> Iterator[tuple[str, dict]]:
    n_layer = ctx.symbols["n_layer"] or 0
    for name, spec in ctx.policy.tensor_specs(n_layer).items():  # type: ignore[union-attr]
        if role is None or spec["role"] == role:
            yield name, spec


def _present(ctx: Context, role: str) -> Iterator[tuple[str, dict]]:
    for name, spec in _specs(ctx, role):
        if ctx.tensor(name) is not None:
            yield name, spec


# -- architecture and metadata ---------------------------------------------------------------
#: arch strings llama.cpp runs with NORM rope (src/llama-model.cpp `llama_model_rope_type`,
#: llama-cpp-python 0.3.36's vendored copy); LLM_ARCH_BITNET is in the NEOX group there
NORM_ROPE_ARCHS = {"llama", "llama4", "deci", "baichuan", "internlm2", "minicpm", "granite", "mistral3"}


@rule("arch.supported", "general.architecture names an architecture the policy has a section for")
def arch_supported(ctx: Context) -> Iterator[Check]:
    arch = ctx.arch
    if ctx.policy is not None:
        yield Check("arch.supported", "general.architecture", "pass", str(arch))
        return
    names = [t.name for t in ctx.reader.tensors]
    msg = f"no policy for architecture {arch!r}"
    if arch is None:
        msg = "general.architecture is missing or not a string"
    elif any(n.endswith("attn_sub_norm.weight") or n.endswith("ffn_sub_norm.weight") for n in names):
        msg = (f"the file has BitNet sub-norm tensors but says {arch!r}: a BitNet model under another "
               "architecture's name" + (f"; llama.cpp runs {arch!r} with NORM rope (BitNet is NEOX) and no sub-norms"
                                        if arch in NORM_ROPE_ARCHS else ""))
    yield Check("arch.supported", "general.architecture", "fail", str(arch), "one of the policy's architectures", msg)


@rule("keys.required", "every key the loader cannot build a model without is present")
def keys_required(ctx: Context) -> Iterator[Check]:
    for s in ctx.policy.required_keys:  # type: ignore[union-attr]
        k = ctx.key(s)
        if k in ctx.reader.fields:
            yield Check("keys.required", k, "pass", "present")
        else:
            yield Check("keys.required", k, "fail", "absent", "required", f"missing required key {k}")


@rule("keys.recommended", "keys the C++ engines default silently are present (missing: warn)")
def keys_recommended(ctx: Context) -> Iterator[Check]:
    for s in ctx.policy.recommended_keys:  # type: ignore[union-attr]
        k = ctx.key(s)
        if k in ctx.reader.fields:
            yield Check("keys.recommended", k, "pass", "present")
        else:
            yield Check("keys.recommended", k, "warn", "absent", "recommended",
                        f"missing key {k}: llama.cpp/bitnet.cpp default it silently")


@rule("keys.types", "config keys hold values of their type (integers, finite numbers, strings)")
def keys_types(ctx: Context) -> Iterator[Check]:
    _ = ctx.symbols  # reads every config key defensively, recording problems
    ctx.float_key("attention.layer_norm_rms_epsilon")
    ctx.float_key("rope.freq_base")
    ctx.int_key("rope.dimension_count")
    ctx.int_key("context_length")
    ctx.int_key("vocab_size")
    for k in ("general.name", "general.architecture"):
        ctx.str_key(k)
    f = ctx.reader.fields.get("general.file_type")
    if f is not None and not isinstance(f.value, int | np.integer):
        ctx.key_problems["general.file_type"] = f"is {f.type.name}, expected an integer"
    for k, problem in sorted(ctx.key_problems.items()):
        yield Check("keys.types", k, "fail", problem, "the key's GGUF type", f"{k} {problem}")
    if not ctx.key_problems:
        yield Check("keys.types", "config keys", "pass", "typed")


@rule("config.positive", "counts (context, width, blocks, ffn, heads) are positive and block_count plausible")
def config_positive(ctx: Context) -> Iterator[Check]:
    for s in ("context_length", "embedding_length", "block_count", "feed_forward_length",
              "attention.head_count", "attention.head_count_kv"):
        v = ctx.int_key(s)
        if v is None:
            continue
        k = ctx.key(s)
        if v <= 0:
            yield Check("config.positive", k, "fail", str(v), "> 0", f"{k} must be positive, got {v}")
        elif s == "block_count" and v > MAX_LAYERS:
            yield Check("config.positive", k, "fail", str(v), f"<= {MAX_LAYERS}", f"{k} = {v} is not a plausible layer count")
        else:
            yield Check("config.positive", k, "pass", str(v), "> 0")


@rule("config.heads_divide_width", "head_count divides embedding_length (head_dim is an integer)")
def heads_divide(ctx: Context) -> Iterator[Check]:
    n_embd, n_head = ctx.int_key("embedding_length"), ctx.int_key("attention.head_count")
    k = ctx.key("attention.head_count")
    if not n_embd or not n_head or n_embd <= 0 or n_head <= 0:
        yield Check("config.heads_divide_width", k, "skip", message="embedding_length or head_count unusable")
    elif n_embd % n_head:
        yield Check("config.heads_divide_width", k, "fail", f"{n_embd} % {n_head} = {n_embd % n_head}", "0",
                    f"embedding_length {n_embd} is not a multiple of head_count {n_head}")
    else:
        yield Check("config.heads_divide_width", k, "pass", f"head_dim {n_embd // n_head}", "integer")


@rule("config.kv_heads_divide_heads", "head_count_kv divides head_count (GQA groups are whole)")
def kv_heads(ctx: Context) -> Iterator[Check]:
    n_head, kv = ctx.int_key("attention.head_count"), ctx.int_key("attention.head_count_kv")
    k = ctx.key("attention.head_count_kv")
    if kv is None or not n_head or n_head <= 0:
        return
    if kv <= 0 or n_head % kv:
        yield Check("config.kv_heads_divide_heads", k, "fail", f"{n_head} heads / {kv}", "divides head_count",
                    f"head_count {n_head} is not a multiple of head_count_kv {kv}")
    else:
        yield Check("config.kv_heads_divide_heads", k, "pass", f"{n_head // kv} heads per kv head", "integer")


@rule("config.block_count", "block_count equals the number of blk.N layers the file holds")
def block_count(ctx: Context) -> Iterator[Check]:
    n_layer = ctx.symbols["n_layer"]
    found = {int(m.group(1)) for t in ctx.reader.tensors if (m := re.match(r"blk\.(\d+)\.", t.name))}
    k = ctx.key("block_count")
    if n_layer is None:
        yield Check("config.block_count", k, "skip", message="block_count unusable")
        return
    layers = max(found) + 1 if found else 0
    if layers != n_layer or len(found) != layers:
        yield Check("config.block_count", k, "fail", f"{len(found)} layers (blk.0..{layers - 1})", str(n_layer),
                    f"block_count {n_layer} but the file has tensors for {len(found)} layers")
    else:
        yield Check("config.block_count", k, "pass", str(layers), str(n_layer))


def _key_equals_symbol(ctx: Context, rule_name: str, suffix: str, symbol: str, label: str,
                       unknown: str) -> Iterator[Check]:
    """A metadata key that restates what the tensors already say (head_dim, embedding rows): it
    must agree, because the C++ engines read the key and we read the tensors."""
    v, want = ctx.int_key(suffix), ctx.symbols[symbol]
    k = ctx.key(suffix)
    if v is None:
        return
    if want is None:
        yield Check(rule_name, k, "skip", str(v), message=unknown)
    elif v != want:
        yield Check(rule_name, k, "fail", str(v), f"{label} {want}", f"{k} = {v} but {label} is {want}")
    else:
        yield Check(rule_name, k, "pass", str(v), f"{label} {want}")


@rule("rope.dimension", "rope.dimension_count equals head_dim (partial rope is not a BitNet layout)")
def rope_dimension(ctx: Context) -> Iterator[Check]:
    yield from _key_equals_symbol(ctx, "rope.dimension", "rope.dimension_count", "head_dim", "head_dim",
                                  "head_dim unknown")


@rule("rope.freq_base", "rope theta is finite, > 1, and within the plausibility window")
def rope_base(ctx: Context) -> Iterator[Check]:
    v = ctx.float_key("rope.freq_base")
    if v is not None:
        yield _env("rope.freq_base", ctx.key("rope.freq_base"), ctx.policy.envelope("rope_freq_base"), v,  # type: ignore[union-attr]
                   f"rope.freq_base {v:g} outside the envelope")


@rule("rope.type", "rope type keys, when a file carries them, agree with the architecture's NEOX rope")
def rope_type(ctx: Context) -> Iterator[Check]:
    rope = ctx.policy.doc["rope"]  # type: ignore[union-attr]
    want = rope["type"]
    for suffix in ("rope.type", "rope_type"):
        k = ctx.key(suffix)
        if k not in ctx.reader.fields:
            continue
        v = ctx.str_key(k)
        if v is None:
            continue
        got = {"neox": "neox", "norm": "norm", "normal": "norm", "llama": "norm", "gptneox": "neox",
               "rotate_half": "neox", "interleaved": "norm"}.get(v.lower(), v.lower())
        if got != want:
            yield Check("rope.type", k, "fail", v, want,
                        f"{k} = {v!r} but {ctx.arch} applies {want.upper()} rope to unpermuted q/k rows: "
                        "q/k were likely permuted for the other rope pairing", rope["source"])
        else:
            yield Check("rope.type", k, "pass", v, want, source=rope["source"])
    k = ctx.key("rope.scaling.type")
    if k in ctx.reader.fields:
        v = ctx.str_key(k)
        # bitnet.cpp's converter (BitnetModel.set_gguf_parameters) writes linear with factor 1.0
        # into every file it makes; llama.cpp reads that as freq_scale = 1/1.0 (0 also means 1):
        # the identity, which is what this engine computes
        f = ctx.float_key("rope.scaling.factor")
        if v is not None and v.lower() == "linear" and f in (None, 0.0, 1.0):
            yield Check("rope.type", k, "pass", f"{v} x {f if f is not None else 1.0:g}", "none",
                        source=rope["source"])
        elif v is not None and v.lower() != "none":
            yield Check("rope.type", k, "fail", v, "none",
                        f"{k} = {v!r}: this engine applies no rope scaling, llama.cpp would", rope["source"])


@rule("rms_eps.range", "RMSNorm epsilon is finite, > 0 and small")
def rms_eps(ctx: Context) -> Iterator[Check]:
    v = ctx.float_key("attention.layer_norm_rms_epsilon")
    if v is not None:
        yield _env("rms_eps.range", ctx.key("attention.layer_norm_rms_epsilon"), ctx.policy.envelope("rms_eps"), v,  # type: ignore[union-attr]
                   f"rms epsilon {v:g} outside the envelope" + (" (0 divides a zero row by zero)" if v == 0 else ""))


@rule("vocab.matches_embedding", "{arch}.vocab_size, when present, equals the embedding's rows")
def vocab_matches(ctx: Context) -> Iterator[Check]:
    yield from _key_equals_symbol(ctx, "vocab.matches_embedding", "vocab_size", "n_vocab", "token_embd rows",
                                  "token_embd.weight missing or not 2-D")


@rule("vocab.tokenizer_fits", "every tokenizer token id has an embedding row")
def vocab_tokenizer(ctx: Context) -> Iterator[Check]:
    f = ctx.reader.fields.get("tokenizer.ggml.tokens")
    rows = ctx.symbols["n_vocab"]
    if f is None or rows is None:
        return
    try:
        n = len(f.value)
    except TypeError:
        yield Check("vocab.tokenizer_fits", "tokenizer.ggml.tokens", "fail", "not an array", "array of strings")
        return
    if n > rows:
        yield Check("vocab.tokenizer_fits", "tokenizer.ggml.tokens", "fail", f"{n} tokens", f"<= {rows} embedding rows",
                    f"the tokenizer has {n} tokens but token_embd.weight only {rows} rows")
    else:
        yield Check("vocab.tokenizer_fits", "tokenizer.ggml.tokens", "pass", f"{n} tokens", f"<= {rows} rows")


@rule("file_type.consistent", "general.file_type names the type every projection actually has")
def file_type(ctx: Context) -> Iterator[Check]:
    f = ctx.reader.fields.get("general.file_type")
    projs = [(n, ctx.tensor(n)) for n, _ in _present(ctx, "projection")]
    kinds = Counter(t.type_name for _, t in projs)  # type: ignore[union-attr]
    measured = ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items()))
    if f is None:
        yield Check("file_type.consistent", "general.file_type", "warn", measured, "present",
                    "general.file_type absent: the projection types cannot be cross-checked")
        return
    if not isinstance(f.value, int | np.integer):
        yield Check("file_type.consistent", "general.file_type", "skip", message="not an integer (keys.types)")
        return
    ft = int(f.value)
    want = ctx.policy.file_type(ft)  # type: ignore[union-attr]
    if want is None:
        yield Check("file_type.consistent", "general.file_type", "fail", str(ft), "a BitNet file type",
                    f"general.file_type {ft} is not a type this policy knows for {ctx.arch}")
        return
    bad = {k: v for k, v in kinds.items() if k != want}
    if bad:
        first = next(n for n, t in projs if t.type_name != want)  # type: ignore[union-attr]
        yield Check("file_type.consistent", "general.file_type", "fail", measured, f"{ft} = all {want}",
                    f"the file claims {want} (file_type {ft}) but {sum(bad.values())} projections are "
                    f"{', '.join(sorted(bad))} (first: {first})")
    else:
        yield Check("file_type.consistent", "general.file_type", "pass", measured, f"{ft} = {want}")


# -- tensors: presence, shapes, types ----------------------------------------------------------
@rule("tensors.required", "every tensor the architecture needs is present")
def tensors_required(ctx: Context) -> Iterator[Check]:
    if ctx.symbols["n_layer"] is None:
        yield Check("tensors.required", "model", "skip", message="block_count unusable: per-layer tensors unknown")
    for name, spec in _specs(ctx):
        if spec.get("optional"):
            continue
        if ctx.tensor(name) is None:
            yield Check("tensors.required", name, "fail", "absent", "required", f"missing tensor {name}")
        else:
            yield Check("tensors.required", name, "pass", "present")


@rule("tensors.unexpected", "no tensor the policy does not know (warn)")
def tensors_unexpected(ctx: Context) -> Iterator[Check]:
    known = set(ctx.policy.tensor_specs(ctx.symbols["n_layer"] or 0))  # type: ignore[union-attr]
    extra = [t.name for t in ctx.reader.tensors if t.name not in known]
    for n in extra[:20]:
        yield Check("tensors.unexpected", n, "warn", "present", "known tensor names", "a tensor the policy does not know: ignored by the engine")
    if len(extra) > 20:
        yield Check("tensors.unexpected", f"{len(extra) - 20} more", "warn", "present", "known tensor names")
    if not extra:
        yield Check("tensors.unexpected", "model", "pass", f"{len(ctx.reader.tensors)} tensors", "all known")


@rule("tensors.shape", "every tensor's shape is what the config says (transposed projections named)")
def tensors_shape(ctx: Context) -> Iterator[Check]:
    sym = ctx.symbols
    for name, spec in _specs(ctx):
        t = ctx.tensor(name)
        if t is None:
            continue
        want = [d if isinstance(d, int) else sym.get(d) for d in spec["shape"]]
        if any(d is None for d in want):
            missing = [s for s, d in zip(spec["shape"], want, strict=True) if d is None]
            yield Check("tensors.shape", name, "skip", str(list(t.shape)), str(spec["shape"]),
                        f"cannot check: {', '.join(map(str, missing))} unknown from the metadata")
            continue
        got = list(t.shape)
        if got == want:
            yield Check("tensors.shape", name, "pass", str(got), str(want))
        else:
            why = "transposed: [ne0, ne1] swapped" if got == list(reversed(want)) and len(got) == 2 else "shape mismatch"
            yield Check("tensors.shape", name, "fail", str(got), f"{want} = {spec['shape']}",
                        f"{name} has shape {got}, expected {want} ({why})")


@rule("tensors.type", "every tensor's type is allowed for its role")
def tensors_type(ctx: Context) -> Iterator[Check]:
    pol = ctx.policy
    for name, spec in _specs(ctx):
        t = ctx.tensor(name)
        if t is None:
            continue
        role = spec["role"]
        allowed = pol.allowed_types(role)  # type: ignore[union-attr]
        if t.type_name in allowed:
            yield Check("tensors.type", name, "pass", t.type_name, "/".join(allowed))
            continue
        fix = next((cid for cid, c in pol.corrections.items()  # type: ignore[union-attr]
                    if c["fixes"] == "tensors.type" and c["role"] == role and t.type_name in c["from_types"]), None)
        if fix and ctx.apply_corrections:
            ctx.applied.append(AppliedCorrection(fix, "tensors.type", (name,), pol.corrections[fix]["action"]))  # type: ignore[union-attr]
            yield Check("tensors.type", name, "pass", f"{t.type_name} -> F32", "/".join(allowed),
                        f"corrected ({fix})", pol.corrections[fix]["source"], correction=fix)  # type: ignore[union-attr]
        else:
            hint = f"; correction {fix} exists (--apply-corrections)" if fix else ""
            yield Check("tensors.type", name, "fail", t.type_name, "/".join(allowed),
                        f"{name} is {t.type_name}; a {role} must be {' or '.join(allowed)}{hint}",
                        pol.types_source(role), correction=fix)  # type: ignore[union-attr]


@rule("tensors.decodes", "every projection's bytes match a weight format exactly (flavor detection)")
def tensors_decodes(ctx: Context) -> Iterator[Check]:
    for name, _ in _present(ctx, "projection"):
        fl = ctx.flavor(name)
        if fl.error:
            yield Check("tensors.decodes", name, "fail", fl.flavor or "none", "a decodable weight format", fl.error)
        elif fl.warning:
            yield Check("tensors.decodes", name, "warn", fl.flavor or "", "exact size", fl.warning)
        else:
            yield Check("tensors.decodes", name, "pass", fl.flavor or "")


# -- values ---------------------------------------------------------------------------------
@rule("values.finite", "no NaN or inf in any float tensor, I2_S scale or block scale")
def values_finite(ctx: Context) -> Iterator[Check]:
    for name, spec in _specs(ctx):
        t = ctx.tensor(name)
        if t is None:
            continue
        role = spec["role"]
        if t.type_name in FLOAT_TENSOR_TYPES:
            st = ctx.float_stats(name, row_norms=role in ("embedding", "output"), ternary=role == "projection")
            if st is None:
                yield Check("values.finite", name, "skip", message="tensor bytes short of its size")
            elif st.nonfinite:
                yield Check("values.finite", name, "fail", f"{st.nonfinite} non-finite", "0",
                            f"{name}: {st.nonfinite} NaN/inf values (first at element {st.first_nonfinite})")
            else:
                yield Check("values.finite", name, "pass", "0 non-finite", "0")
        elif role == "projection":
            cs = ctx.code_stats(name)
            if cs is None:
                continue
            bad = []
            if cs.scale is not None and not math.isfinite(cs.scale):
                bad.append(f"I2_S scale is {cs.scale}")
            if cs.block_scales_nonfinite:
                bad.append(f"{cs.block_scales_nonfinite} block scales are NaN/inf")
            if bad:
                yield Check("values.finite", name, "fail", "; ".join(bad), "finite", f"{name}: {'; '.join(bad)}")
            else:
                yield Check("values.finite", name, "pass", "0 non-finite", "0")


@rule("norm.rms", "RMS of every norm weight vector within the norm_rms envelope")
def norm_rms(ctx: Context) -> Iterator[Check]:
    env = ctx.policy.envelope("norm_rms")  # type: ignore[union-attr]
    for name, _ in _present(ctx, "norm"):
        st = ctx.float_stats(name)
        if st is None:
            yield Check("norm.rms", name, "skip", message="not a float tensor (tensors.type)")
        elif not st.nonfinite:
            yield _env("norm.rms", name, env, st.rms, f"gain RMS {st.rms:.3g}" + (": all zero" if st.absmax == 0 else ""))


@rule("norm.mean", "mean of every norm weight vector positive (warn)")
def norm_mean(ctx: Context) -> Iterator[Check]:
    env = ctx.policy.envelope("norm_mean")  # type: ignore[union-attr]
    for name, _ in _present(ctx, "norm"):
        st = ctx.float_stats(name)
        if st is not None and not st.nonfinite:
            yield _env("norm.mean", name, env, st.mean, f"mean gain {st.mean:.3g}")


@rule("norm.not_quantized", "norm weights are not a quantized (ternary x scale) copy")
def norm_not_quantized(ctx: Context) -> Iterator[Check]:
    env = ctx.policy.envelope("norm_distinct_values")  # type: ignore[union-attr]
    for name, _ in _present(ctx, "norm"):
        st = ctx.float_stats(name)
        if st is None or st.distinct is None or st.n < 64 or st.nonfinite or st.absmax == 0:
            continue
        yield _env("norm.not_quantized", name, env, st.distinct,
                   f"only {st.distinct} distinct values in {st.n}: quantized like a projection")


def _embedding_row_norms(ctx: Context) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, every row norm, the non-zero ones) of token_embd and output.weight, for the two
    embedding rules; tensors without usable statistics (absent, non-finite) are passed over."""
    for role in ("embedding", "output"):
        for name, _ in _present(ctx, role):
            st = ctx.float_stats(name, row_norms=True)
            if st is None or st.row_norms is None or st.nonfinite:
                continue
            yield name, st.row_norms, st.row_norms[st.row_norms > 0]


@rule("embedding.scale", "element RMS of token_embd (and output.weight) rows within the envelope")
def embedding_scale(ctx: Context) -> Iterator[Check]:
    env = ctx.policy.envelope("embedding_element_rms")  # type: ignore[union-attr]
    for name, _, rn in _embedding_row_norms(ctx):
        if not rn.size:
            yield Check("embedding.scale", name, "fail", "0", env.describe(), f"{name} is all zero")
            continue
        v = float(np.median(rn)) / math.sqrt(ctx.tensor(name).shape[0])  # type: ignore[union-attr]
        yield _env("embedding.scale", name, env, v, f"median row RMS {v:.3g}")


@rule("embedding.rows", "no token_embd row dominates (max / median row norm)")
def embedding_rows(ctx: Context) -> Iterator[Check]:
    env = ctx.policy.envelope("embedding_row_norm_ratio")  # type: ignore[union-attr]
    for name, norms, rn in _embedding_row_norms(ctx):
        if rn.size:
            ratio = float(rn.max() / np.median(rn))
            row = int(np.argmax(norms))
            yield _env("embedding.rows", name, env, ratio, f"row {row} has {ratio:.3g}x the median norm")


# -- projections ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProjFacts:
    counts: dict[str, int]
    scale: float | None  # the scale the weight itself stores (I2_S, mean block d, float magnitude)
    scale_tensor: float | None  # the `.scale` tensor, when present and finite
    zero_groups: int
    groups: int
    k: int

    @property
    def ternary_n(self) -> int:
        return self.counts["-1"] + self.counts["0"] + self.counts["+1"]

    @property
    def zero_share(self) -> float:
        return self.counts["0"] / self.ternary_n if self.ternary_n else 1.0

    @property
    def effective_scale(self) -> float | None:
        if self.scale is None and self.scale_tensor is None:
            return None
        return (1.0 if self.scale is None else self.scale) * (1.0 if self.scale_tensor is None else self.scale_tensor)


def _proj(ctx: Context, name: str) -> ProjFacts | None:
    t = ctx.tensor(name)
    if t is None or len(t.shape) != 2:
        return None
    st_scale = None
    sname = name.removesuffix(".weight") + ".scale"
    sst = ctx.float_stats(sname) if ctx.tensor(sname) is not None else None
    if sst is not None and sst.nonfinite:
        return None  # a NaN/inf .scale tensor: values.finite names it, nothing else is judged
    if sst is not None and sst.n == 1:
        st_scale = sst.sum
    if t.type_name in FLOAT_TENSOR_TYPES:
        fs = ctx.float_stats(name, ternary=True)
        if fs is None or fs.nonfinite:
            return None
        return ProjFacts(fs.counts, fs.ternary_scale, st_scale, fs.zero_groups, fs.groups, t.shape[0])
    cs = ctx.code_stats(name)
    if cs is None:
        return None
    scale = cs.scale if cs.flavor == "i2_s" else cs.block_scale_mean
    if cs.block_scales_nonfinite or (scale is not None and not math.isfinite(scale)):
        return None
    return ProjFacts(cs.counts, scale, st_scale, cs.zero_groups, cs.groups, t.shape[0])


@rule("projection.ternary", "projections hold ternary values times one scale (float ones included)")
def projection_ternary(ctx: Context) -> Iterator[Check]:
    for name, _ in _present(ctx, "projection"):
        pf = _proj(ctx, name)
        if pf is None:
            continue
        other = pf.counts.get("other", 0) + pf.counts.get("invalid", 0)
        n = pf.ternary_n + other
        if other:
            what = "values outside {-s, 0, +s}" if "other" in pf.counts else "codes outside the ternary table (code 3)"
            yield Check("projection.ternary", name, "fail", f"{other / n:.3%} non-ternary", "0",
                        f"{name}: {other} of {n} {what}: not a BitNet b1.58 weight",
                        "definitional: BitLinear weights are ternary times one scale per tensor (block for TQ)")
        else:
            yield Check("projection.ternary", name, "pass", "ternary", "-1/0/+1 x scale")


@rule("projection.scale_present", "every projection carries a real weight scale (not dropped: 0, or exactly 1 with no .scale tensor)")
def scale_present(ctx: Context) -> Iterator[Check]:
    src = ("definitional: an absmean scale of a trained matrix is a data-dependent float; a converter that "
           "drops it writes 0, 1.0 (the bare ternary pattern) or no .scale tensor")
    for name, _ in _present(ctx, "projection"):
        pf = _proj(ctx, name)
        if pf is None or pf.counts.get("other", 0):
            continue
        s = pf.effective_scale
        sname = name.removesuffix(".weight") + ".scale"
        has_st = ctx.tensor(sname) is not None
        if s is None:
            yield Check("projection.scale_present", name, "fail", "no scale", "a scale",
                        f"{name} stores no scale and has no {sname} tensor: the weight scale was dropped", src)
        elif s <= 0:
            yield Check("projection.scale_present", name, "fail", _g(s), "> 0",
                        f"{name}: weight scale {s:g}: dropped (every output would be zero or sign-flipped)", src)
        elif s == 1.0 and pf.ternary_n > 0:
            where = f"and {sname} is 1.0" if has_st else f"and there is no {sname} tensor"
            yield Check("projection.scale_present", name, "fail", "1.0", "!= 1.0 exactly",
                        f"{name} holds the bare ternary pattern (scale 1.0) {where}: the weight scale was dropped", src)
        else:
            yield Check("projection.scale_present", name, "pass", _g(s), "> 0, != 1")


@rule("ternary.zero_share", "share of zero codes of every projection within the envelope")
def zero_share(ctx: Context) -> Iterator[Check]:
    env = ctx.policy.envelope("ternary_zero_share")  # type: ignore[union-attr]
    for name, _ in _present(ctx, "projection"):
        pf = _proj(ctx, name)
        if pf is not None and pf.ternary_n and not pf.counts.get("other", 0):
            yield _env("ternary.zero_share", name, env, pf.zero_share, f"{pf.zero_share:.1%} of the codes are 0")


@rule("ternary.balance", "balance of +1 and -1 codes |n+ - n-| / (n+ + n-) within the envelope")
def balance(ctx: Context) -> Iterator[Check]:
    env = ctx.policy.envelope("ternary_balance")  # type: ignore[union-attr]
    for name, _ in _present(ctx, "projection"):
        pf = _proj(ctx, name)
        if pf is None or pf.counts.get("other", 0):
            continue
        nz = pf.counts["+1"] + pf.counts["-1"]
        if nz:
            b = abs(pf.counts["+1"] - pf.counts["-1"]) / nz
            yield _env("ternary.balance", name, env, b, f"+1: {pf.counts['+1']}, -1: {pf.counts['-1']}")


@rule("ternary.zero_blocks", "share of all-zero 256-code groups (or TQ blocks with d = 0) within the envelope")
def zero_blocks(ctx: Context) -> Iterator[Check]:
    env = ctx.policy.envelope("ternary_zero_block_share")  # type: ignore[union-attr]
    for name, _ in _present(ctx, "projection"):
        pf = _proj(ctx, name)
        if pf is None or not pf.groups or pf.counts.get("other", 0):
            continue
        share = pf.zero_groups / pf.groups
        msg = f"{pf.zero_groups} of {pf.groups} groups of 256 codes are all zero" + (" (the whole projection)" if pf.zero_groups == pf.groups else "")
        yield _env("ternary.zero_blocks", name, env, share, msg)


@rule("projection.gain", "scale x sqrt(K x (1 - zero share)), a projection's RMS gain, within the envelope")
def gain(ctx: Context) -> Iterator[Check]:
    env = ctx.policy.envelope("projection_gain")  # type: ignore[union-attr]
    for name, _ in _present(ctx, "projection"):
        pf = _proj(ctx, name)
        if pf is None or not pf.ternary_n:
            continue
        if pf.counts.get("other", 0):
            st = ctx.float_stats(name, ternary=True)
            g = st.rms * math.sqrt(pf.k) if st is not None else None  # a float matrix's own RMS gain
        else:
            s = pf.effective_scale
            g = None if s is None or s <= 0 else s * math.sqrt(pf.k * (1 - pf.zero_share))
        if g is None or g == 0:
            continue
        c = _env("projection.gain", name, env, g, f"gain {g:.3g}")
        if c.status != "pass":
            hints = []
            if env.status(math.sqrt(g * math.sqrt(pf.k * (1 - pf.zero_share)))) == "pass":
                hints.append("the square root of the scale would be in the envelope: a squared scale?")
            inv = pf.effective_scale
            if inv and env.status((1 / inv) * math.sqrt(pf.k * (1 - pf.zero_share))) == "pass":
                hints.append("1/scale would be in the envelope: an inverted scale (HF weight_scale)?")
            c = Check(c.rule, c.subject, c.status, c.measured, c.bound, "; ".join([c.message, *hints]), c.source)
        yield c


ORDER = tuple(RULES)
