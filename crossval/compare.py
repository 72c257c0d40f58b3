"""Our engine against libllama (the pair of engines crossval.pair compares), and tokenizer
parity against libllama."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossval.pair import EngineComparison
from crossval.parity import (
    ParityResult,
    compare,
    errored,
    flips_decide,
    gate_layers,
    parity_receipt,
    write_parity_receipt,
)
from crossval.runner import run_reference
from crossval.timeouts import PARITY_TIMEOUT_S

#: activation treatments that round to int8 (`tl2-lut`: bitnet.cpp's TL2 LUT kernels quantize each
#: row to int8 before building their tables)
INT8_ACTS = ("per-token-absmax", "q8_k-block256", "tl2-lut")


def gate_family(model) -> str:
    """`int8-act` when any projection quantizes its activations to int8 under the model's
    numerics profile (a one-ulp float difference can flip an int8 rounding there), `f16-act`
    when any rounds them to F16/BF16 or attention rounds to F16 (F16 KV cache, Q to F16), else
    `float`."""
    from bitnet.model.profiles import PROFILES

    # the family the named profile promises (its table entry), not what a run's profile object
    # does: a planted fault that flips a knob must not choose itself looser bounds
    prof = PROFILES.get(model.profile.name, model.profile)
    acts = {prof.act_for(f) for f in model.flavors}
    if acts & set(INT8_ACTS):
        return "int8-act"
    # an F16 KV cache or Q rounded to F16 (the bitnet.cpp profiles) rounds inside attention
    # even with F32 weights: measured against the fork's F32 path, 1-cos 1e-8, rel max-abs
    # 1.2e-4, far above the float family's floor
    f16_attention = np.dtype(prof.kv_dtype) == np.float16 or prof.q_f16
    return "f16-act" if acts & {"f16", "bf16"} or f16_attention else "float"


@dataclass
class EngineOutputs:
    prompt_logits: np.ndarray  # [T, V], one batch
    decode_logits: np.ndarray  # [S, V], step s fed forced[s] at position T + s through the KV cache
    greedy: list[int]  # our own free-running greedy continuation
    profile: str
    family: str
    #: every layer's free-running output (prompt [L, T, D], decode steps [L, S, D]) when captured
    #: (crossval.deep.capture_layers: the deep-model depth envelope)
    layers: tuple | None = None


def engine_outputs(model, ids: Sequence[int], forced: Sequence[int], n_greedy: int,
                   stepwise: bool = False) -> EngineOutputs:
    """Our side of a comparison from a loaded BitNetModel: prompt logits, the teacher-forced
    decode steps along `forced` (the reference's greedy tokens), and our own greedy tokens
    (equal to the teacher-forced argmaxes until they first differ; a fresh run after that)."""
    ids = [int(i) for i in ids]
    forced = [int(t) for t in forced]
    n = len(ids)
    cache = model.new_cache()  # zeros are committed lazily: the model's context costs nothing unused
    if stepwise:  # one token per forward call through the cache (single-row numerics), as the
        # reference's stepwise prompt mode evaluates it
        prompt = np.concatenate([model.forward(np.asarray([t], np.int64), cache, i, all_logits=True)
                                 for i, t in enumerate(ids)]).astype(np.float32)
    else:
        prompt = model.forward(np.asarray(ids, np.int64), cache, 0, all_logits=True)
    rows = [model.forward(np.asarray([t], np.int64), cache, n + s, all_logits=False)[0] for s, t in enumerate(forced)]
    V = prompt.shape[1]
    decode = np.stack(rows).astype(np.float32) if rows else np.zeros((0, V), np.float32)
    greedy: list[int] = []
    last = prompt[-1]
    for s in range(n_greedy):
        tok = int(np.argmax(last))
        greedy.append(tok)
        if s + 1 == n_greedy:
            break
        if greedy == forced[:s + 1] and s < len(rows):
            last = rows[s]
        else:  # we left the reference's path: continue on our own from a fresh cache
            c2 = model.new_cache(cache.max_ctx)
            last = model.forward(np.asarray(ids + greedy, np.int64), c2, 0, all_logits=False)[0]
            for s2 in range(s + 1, n_greedy):
                tok = int(np.argmax(last))
                greedy.append(tok)
                if s2 + 1 < n_greedy:
                    last = model.forward(np.asarray([tok], np.int64), c2, n + s2, all_logits=False)[0]
            break
    return EngineOutputs(prompt, decode, greedy, model.profile.name, gate_family(model))


def _sublayer_ref(data: dict, m, ids: list[int]) -> dict | None:
    """libllama's sub-block boundaries (crossval.layers.SUBLAYER_OPS) from the worker's trace
    data, keyed (layer, our op); None when the graph names too few of them for this arch (the
    per-layer gate then forces whole layers, and says so)."""
    from bitnet.errors import ConfigError
    from crossval.layers import SUBLAYER_OPS
    from crossval.trace import reference_sublayers

    if "trace_names" not in data:
        return None
    try:
        ref = reference_sublayers(data, m.config.arch, len(m.layers), len(ids))
    except ConfigError:
        return None
    need = {(i, op) for i in range(len(m.layers)) for op in SUBLAYER_OPS}
    return ref if need <= set(ref) else None


def _ours(model: Path, ids: list[int], numerics: str | None, strict: bool, forced: list[int], n_greedy: int,
          backend: str, l_out: np.ndarray | None = None, apply_corrections: bool = False,
          trace_data: dict | None = None, profile: str = "exact", timings: dict | None = None,
          decode_l_out: np.ndarray | None = None, stepwise: bool = False, sub_data: dict | None = None):
    from bitnet.kernels import dispatch
    from bitnet.model import BitNetModel
    from crossval.layers import (
        sublayer_forced_layers,
        teacher_forced_decode_layers,
        teacher_forced_layers,
    )

    dispatch.set_backend(backend)
    t0 = time.perf_counter()
    m = BitNetModel(model, profile=numerics, strict=strict, apply_corrections=apply_corrections)
    trace = None
    try:
        sub_ref = _sublayer_ref(sub_data, m, ids) if sub_data is not None and l_out is not None else None
        if trace_data is None:
            from contextlib import nullcontext

            from crossval.deep import capture_layers, engine_layers

            # with the reference's layers at hand, our free-running layers too (crossval.deep:
            # the deep-model depth envelope); the teacher-forced runs below are not captured
            with capture_layers() if l_out is not None else nullcontext() as calls:
                out = engine_outputs(m, ids, forced, n_greedy, stepwise)
            if calls:
                out.layers = engine_layers(calls, len(forced))
            layers = teacher_forced_layers(m, ids, l_out) if l_out is not None and sub_ref is None else None
        else:  # the op-by-op trace (crossval.trace), recorded in the passes made anyway
            from bitnet.model.record import recording
            from crossval.trace import op_order, trace_libllama

            with recording() as rec:
                out = engine_outputs(m, ids, forced, n_greedy, stepwise)
            order = op_order(len(m.layers))
            first = rec.records[:len(order)]  # the prompt pass: engine_outputs' first forward
            ours_rec = {(r.layer, r.op): r.value for r in first} if [(r.layer, r.op) for r in first] == order else None
            del rec
            forced_rec: dict | None = {} if l_out is not None else None
            layers = teacher_forced_layers(m, ids, l_out, record_into=forced_rec) if l_out is not None else None
            t1 = time.perf_counter()
            trace = trace_libllama(None, model, ids, profile=profile, model=m, captured=trace_data, ours=ours_rec,
                                   forced=forced_rec)
            if timings is not None:
                timings["engine_trace_walk_s"] = time.perf_counter() - t1
        if sub_ref is not None:  # the per-layer gate: every sub-block on the reference's own inputs
            layers = sublayer_forced_layers(m, ids, sub_ref)
        dec_layers = teacher_forced_decode_layers(m, ids, forced, l_out, decode_l_out) \
            if l_out is not None and decode_l_out is not None and forced else None
    finally:
        m.close()
    return out, (layers, dec_layers), time.perf_counter() - t0, m.corrections, trace


def crossval_model(cpp_dir: str | os.PathLike[str], model: str | os.PathLike[str], ids: Sequence[int], *,
                   profile: str = "exact", numerics: str | None = None, n_greedy: int = 8, strict: bool = True,
                   backend: str = "numpy", receipt: str | os.PathLike[str] | None = None,
                   timeout: float = PARITY_TIMEOUT_S, worker_argv: Sequence[str] | None = None,
                   per_layer: bool = True, end_to_end: str = "gate", apply_corrections: bool = False,
                   trace: bool = False, prompt_mode: str = "batch") -> ParityResult:
    """Our engine (`reference[:numerics]@backend`) against a libllama build; see
    `crossval_libllama` (this returns its result alone)."""
    return crossval_libllama(cpp_dir, model, ids, profile=profile, numerics=numerics, n_greedy=n_greedy,
                             strict=strict, backend=backend, receipt=receipt, timeout=timeout,
                             worker_argv=worker_argv, per_layer=per_layer, end_to_end=end_to_end,
                             apply_corrections=apply_corrections, trace=trace, prompt_mode=prompt_mode).result


def crossval_libllama(cpp_dir: str | os.PathLike[str], model: str | os.PathLike[str], ids: Sequence[int],
                      **kw) -> EngineComparison:
    """See `_crossval_libllama`; a TL file without its kernel config key finds it in a TL
    build's checkout (crossval.tl_build.build_kernel_config)."""
    from crossval.tl_build import build_kernel_config

    with build_kernel_config(cpp_dir, model):
        return _crossval_libllama(cpp_dir, model, ids, **kw)


def _crossval_libllama(cpp_dir: str | os.PathLike[str], model: str | os.PathLike[str], ids: Sequence[int], *,
                      profile: str = "exact", numerics: str | None = None, n_greedy: int = 8, strict: bool = True,
                      backend: str = "numpy", receipt: str | os.PathLike[str] | None = None,
                      timeout: float = PARITY_TIMEOUT_S, worker_argv: Sequence[str] | None = None,
                      per_layer: bool = True, end_to_end: str = "gate",
                      apply_corrections: bool = False, trace: bool = False,
                      prompt_mode: str = "batch") -> EngineComparison:
    """Prompt logits and `n_greedy` teacher-forced decode steps (the reference's greedy tokens
    fed to both sides, ours through our KV cache), gated separately at the bounds of the
    model's format family. `per_layer` (default) also runs each of our layers on the
    reference's own input (libllama's `l_out-N`, crossval.layers) and gates it: for
    activation-rounding formats the end-to-end floor is set by rounding flips that grow through
    the layers, the per-layer median is not. With end_to_end="report" the end-to-end comparison
    is reported beside the per-layer verdict instead of deciding it (deep models).
    `prompt_mode="stepwise"` evaluates the prompt one token at a time on both sides (each
    reference call a single-row llama_decode through its KV cache) instead of in one batch:
    comparing the two modes localises a fault to the reference's batched path (the per-layer
    capture is one batch, so it is not applied then). `trace`
    adds the op-by-op trace (crossval.trace): libllama's named tensors captured in the same
    worker run, ours on the same loaded model; `result.trace` and the receipt's "trace" key.

    This is the engine pair `reference` vs `libllama:DIR` of crossval.pair with the decode-step
    and per-layer gates added (they need our model's KV cache and layers, and libllama's
    `l_out` capture, so no other pair has them); the receipt names both engines (schema 2.x)."""
    from bitnet import __version__
    from bitnet.engines.protocol import EngineInfo

    if end_to_end not in ("gate", "report"):
        raise ValueError(f"end_to_end must be 'gate' or 'report', got {end_to_end!r}")
    if prompt_mode not in ("batch", "stepwise"):
        raise ValueError(f"prompt_mode must be 'batch' or 'stepwise', got {prompt_mode!r}")
    stepwise = prompt_mode == "stepwise"
    ids = [int(i) for i in ids]
    model = Path(model)
    spec = "reference" + (f":{numerics}" if numerics else "") + f"@{backend}"
    ours_info = EngineInfo(spec, "bitnet-harness reference", __version__, f"backend {backend}", numerics or "inferred")
    timings: dict = {"timeout_s": timeout}
    corrections: list[dict] = []

    def ref_info() -> EngineInfo:
        from bitnet.errors import BitNetError
        from crossval.engine import LibllamaEngine

        try:
            return LibllamaEngine(f"libllama:{cpp_dir}", str(cpp_dir)).describe()
        except BitNetError as e:
            return EngineInfo(f"libllama:{cpp_dir}", "unknown", "unknown", f"describe failed: {e}", "unknown")

    def finish(result: ParityResult) -> EngineComparison:
        theirs = ref_info()
        c = EngineComparison(result, ours_info, theirs, timings)
        if receipt is not None and model.is_file():
            c.receipt = write_parity_receipt(receipt, parity_receipt(
                result, model=model, prompt_ids=ids, engine=ours_info.to_dict(), reference=theirs.to_dict(),
                timings=timings, corrections=corrections))
        return c

    t0 = time.perf_counter()
    layers_req = None
    if per_layer and stepwise and end_to_end == "report":
        return finish(errored("per-layer gate requested alone, but libllama's layers are captured from one batch "
                              "and the prompt mode is stepwise", profile))
    if per_layer and not stepwise:
        from bitnet.gguf.reader import GGUFReader
        from bitnet.model.config import read_config

        with GGUFReader(model) as rd:
            cfg = read_config(rd, strict=False)
        layers_req = {"n_layer": cfg.n_layer, "n_embd": cfg.n_embd}
    trace_req = None
    if trace or layers_req is not None:  # the per-layer gate forces sub-blocks on libllama's named tensors
        from crossval.trace import CAPTURE_NAMES, SUBLAYER_CAPTURE_NAMES

        trace_req = {"ids": ids, "names": list(CAPTURE_NAMES if trace else SUBLAYER_CAPTURE_NAMES),
                     "decode_last": False}
    ref = run_reference(cpp_dir, model, ids=ids, n_greedy=n_greedy, timeout=timeout, worker_argv=worker_argv,
                        layers=layers_req, trace=trace_req, prompt_mode=prompt_mode)
    timings["reference_s"] = time.perf_counter() - t0
    if not ref.ok:
        return finish(errored(f"reference: {ref.error}", profile))
    ref_greedy = [int(t) for t in ref.data.get("greedy", np.zeros(0, np.int32))]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    fut = pool.submit(_ours, model, ids, numerics, strict, ref_greedy, n_greedy, backend, ref.data.get("l_out"),
                      apply_corrections, ref.data if trace else None, profile, timings,
                      ref.data.get("decode_l_out"), stepwise, ref.data if layers_req is not None else None)
    try:
        out, (layer_metrics, decode_layer_metrics), ours_s, corrections, op_trace = fut.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        pool.shutdown(wait=False, cancel_futures=True)
        return finish(errored(f"ours: the engine ran past {timeout:g} s", profile))
    except Exception as e:  # our engine refusing the model (strict mode, format) is an error verdict
        pool.shutdown(wait=False)
        return finish(errored(f"ours: {type(e).__name__}: {e}", profile))
    pool.shutdown(wait=False)
    timings["engine_s"] = ours_s
    ours_info = dataclasses.replace(ours_info, numerics=out.profile)
    ref_logits = ref.data["logits"]
    ours = out.prompt_logits
    if ours.shape != ref_logits.shape:
        return finish(errored(f"logits shapes differ: ours {ours.shape}, reference {ref_logits.shape} "
                              f"(vocab: ours {ours.shape[1]}, libllama {int(ref.data['n_vocab'])})", profile))
    dec_ref = ref.data.get("decode_logits")
    result = compare(ours, ref_logits, profile, greedy_ours=out.greedy, greedy_ref=ref_greedy, family=out.family,
                     decode_ours=out.decode_logits if dec_ref is not None else None, decode_ref=dec_ref,
                     decode_tokens=ref_greedy,
                     flips_decide=flips_decide(profile, out.family, layer_metrics is not None))
    if layer_metrics is not None:
        if out.layers is not None:  # the end-to-end run seen at every depth (crossval.deep)
            from crossval.deep import depth_profiles

            result.depth = depth_profiles(out.layers, ref.data["l_out"], ref.data.get("decode_l_out"))
        result = gate_layers(result, layer_metrics, end_to_end=end_to_end, decode_layers=decode_layer_metrics)
        if all(x.op is None for x in layer_metrics):
            why = ref.data.get("trace_error", "libllama's graph names too few of the sub-block tensors")
            result.reason += f"; per-layer gate forces whole layers, not sub-blocks ({why})"
        if decode_layer_metrics is None and n_greedy:
            result.reason += "; decode steps not gated per layer (" + str(ref.data.get(
                "decode_l_out_error", "the reference captured no decode-step layers")) + ")"
    elif per_layer and stepwise:
        result.reason += "; prompt fed token by token (stepwise): per-layer gate not applied (its capture is one batch)"
    elif per_layer:
        why = str(ref.data.get("l_out_error", "no l_out captured"))
        if end_to_end == "report":
            return finish(errored(f"per-layer gate requested alone, but the reference's layers were not captured: "
                                  f"{why}", profile))
        result.reason += f"; per-layer gate not applied (reference layers not captured: {why})"
    if op_trace is not None:
        from crossval.trace import trace_to_dict

        result.trace = trace_to_dict(op_trace)
        if "trace_s" in ref.data:
            timings["reference_trace_s"] = float(ref.data["trace_s"])
    return finish(result)


def tokenizer_parity(cpp_dir: str | os.PathLike[str], model: str | os.PathLike[str], texts: Sequence[str], *,
                     add_special: bool = False, parse_special: bool = False) -> tuple[list[int], int, int]:
    """Indices of texts whose ids differ, plus (our real vocab size, libllama's n_vocab)."""
    from bitnet.errors import BridgeError
    from bitnet.tokenizer import load_tokenizer

    ref = run_reference(cpp_dir, model, texts=list(texts), add_special=add_special, parse_special=parse_special)
    if not ref.ok:
        raise BridgeError(f"reference tokenizer: {ref.error}")
    tok = load_tokenizer(model)
    bad = [i for i, t in enumerate(texts)
           if tok.encode(t, add_special=add_special, parse_special=parse_special) != ref.data[f"tok_{i}"].tolist()]
    return bad, tok.real_vocab_size, int(ref.data["n_vocab"])
