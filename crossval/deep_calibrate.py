"""Measure the end-to-end divergence of correct pairs and planted faults at a deep shape.

`python -m crossval.deep_calibrate --pair NAME=CPP_DIR:NUMERICS:MODEL [--pair ...] --out JSON
[--prompts N] [--decode S] [--faults] [--lm-head-check]` measures; `--report JSON` judges a
recorded run again (crossval.deep: statistic, bound, margin) and prints its tables as Markdown;
`--update-policy` writes the bound into policies/parity.yml (`profiles.exact.deep`).

For every pair (our engine under NUMERICS, native backend, against the libllama build in
CPP_DIR on MODEL) and every prompt (the first is crossval's usual 12-token prompt, the others
random ids of other lengths), each compared on its prompt positions and on S teacher-forced
decode steps (the reference's greedy tokens fed to both sides):
- `reference`: ours against libllama, a correct pair;
- `perturbation`: ours with one harmless float change (crossval.perturb) against ours, a
  correct pair with no second engine;
- `fault` (--faults, first prompt): ours with each planted fault (crossval.faults) against
  libllama, and whether the fault changes the model at all (ours-with-fault against ours).
Every record keeps its per-position 1-cos, KL and relative max|d| so that a statistic can be
chosen and judged again without measuring (crossval.deep.judge).

`--lm-head-check` (issue 20 item 7) feeds libllama's own last-layer output (`l_out`, prompt
batch and each single-row decode step) through our final norm and lm_head with and without the
F16 rounding of the lm_head input, against libllama's logits: which one matches, per section.

Runs one measurement after another in this process (libllama in its worker subprocess); the
JSON is rewritten after each pair, so a long run can be resumed with --resume.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from bitnet.files.atomic import atomic_write_text

#: crossval's usual prompt (crossval.calibrate.fault_runs, docs/reference/parity.md)
PROMPT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330]
#: the other prompts' lengths (ids drawn at random from the vocabulary, seeded per pair)
LENGTHS = (5, 24, 9, 16, 3, 12)


def prompts_for(n: int, vocab: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng([seed, 20])
    return [PROMPT] + [rng.integers(0, vocab, LENGTHS[i % len(LENGTHS)]).tolist() for i in range(n - 1)]


def per_position(ours: np.ndarray, ref: np.ndarray) -> dict:
    """The per-position metrics the statistic is chosen from (lists, one entry per position)."""
    from crossval.parity import position_metrics

    rows = position_metrics(np.asarray(ours), np.asarray(ref)) if len(ours) else []
    return {"one_minus_cos": [p.one_minus_cos for p in rows], "kl": [p.kl for p in rows],
            "rel_max_abs": [p.rel_max_abs for p in rows], "top1_flips": int(sum(p.top1_ours != p.top1_ref for p in rows)),
            "nonfinite": bool(not (np.isfinite(ours).all() and np.isfinite(ref).all()))}


def _sections(o, r_prompt, r_decode) -> dict:
    return _round({"prompt": per_position(o.prompt_logits, r_prompt), "decode": per_position(o.decode_logits, r_decode)})


def free_running_outputs(path: Path, numerics: str, ids, forced, ctx=None):
    """Our outputs (crossval.compare.EngineOutputs) with `.layers` = (prompt [L, T, D], decode
    steps [L, S, D]), every layer's free-running output (crossval.deep.capture_layers)."""
    from contextlib import nullcontext

    from bitnet.model import BitNetModel
    from crossval.compare import engine_outputs
    from crossval.deep import capture_layers, engine_layers

    with ctx if ctx is not None else nullcontext():
        m = BitNetModel(path, profile=numerics, strict=False)
        try:
            with capture_layers() as calls:
                o = engine_outputs(m, ids, forced, 0)
        finally:
            m.close()
    o.layers = engine_layers(calls, len(forced))
    return o


def _round(x):
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return float(f"{x:.4g}") if isinstance(x, float) and np.isfinite(x) else x


def _depth(ours, ref_prompt: np.ndarray, ref_decode: np.ndarray) -> dict:
    from crossval.deep import depth_profile

    return {"depth": _round({"prompt": depth_profile(ours.layers[0], ref_prompt),
                             "decode": depth_profile(ours.layers[1], ref_decode)})}


def measure_pair(name: str, cpp_dir: str, numerics: str, path: Path, *, n_prompts: int, n_decode: int,
                 faults: bool, lm_head_check: bool, log) -> dict:
    from bitnet.gguf.reader import GGUFReader
    from bitnet.model.config import read_config
    from crossval.faults import FAULTS, plant
    from crossval.perturb import PERTURBATIONS, perturb
    from crossval.runner import run_reference

    with GGUFReader(path) as rd:
        cfg = read_config(rd, strict=False)
    prompts = prompts_for(n_prompts, cfg.n_vocab, zlib.crc32(path.name.encode()))
    t0 = time.perf_counter()
    layers = {"n_layer": cfg.n_layer, "n_embd": cfg.n_embd}  # l_out and decode_l_out of the first prompt
    ref = run_reference(cpp_dir, path, ids=prompts[0], n_greedy=n_decode, layers=layers, timeout=3600,
                        runs=[{"ids": p, "n_greedy": n_decode} for p in prompts[1:]])
    if not ref.ok:
        raise RuntimeError(f"libllama on {path}: {ref.error}")
    log(f"{name}: reference, {len(prompts)} prompts, {time.perf_counter() - t0:.0f} s")

    def key(j: int, k: str) -> str:
        return k if j == 0 else f"{k}_{j - 1}"  # the worker suffixes `runs` from 0

    from bitnet.model import BitNetModel
    from crossval.compare import gate_family

    m = BitNetModel(path, profile=numerics, strict=False)
    family = gate_family(m)
    m.close()
    base = {"pair": name, "model": path.name, "numerics": numerics, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd}
    records, clean = [], {}
    for j, ids in enumerate(prompts):
        forced = [int(t) for t in ref.data[key(j, "greedy")]]
        t1 = time.perf_counter()
        o = free_running_outputs(path, numerics, ids, forced)
        clean[j] = (o, forced)
        records.append({**base, "kind": "reference", "name": None, "prompt_index": j, "prompt_len": len(ids),
                        "forced": forced, "seconds": time.perf_counter() - t1,
                        **_sections(o, ref.data[key(j, "logits")], ref.data[key(j, "decode_logits")]),
                        **(_depth(o, ref.data["l_out"], ref.data["decode_l_out"]) if j == 0 else {})})
        for pname in PERTURBATIONS:
            t1 = time.perf_counter()
            po = free_running_outputs(path, numerics, ids, forced, perturb(pname))
            records.append({**base, "kind": "perturbation", "name": pname, "prompt_index": j, "prompt_len": len(ids),
                            "seconds": time.perf_counter() - t1, **_sections(po, o.prompt_logits, o.decode_logits),
                            **_depth(po, *o.layers)})
        log(f"{name}: prompt {j} ({len(ids)} tokens): ours + {len(PERTURBATIONS)} perturbations")
    fault_rows = []
    if faults:
        o, forced = clean[0]
        for fname, f in FAULTS.items():
            t1 = time.perf_counter()
            row = {**base, "kind": "fault", "name": fname, "size": f.size, "prompt_index": 0,
                   "prompt_len": len(prompts[0])}
            try:
                fo = free_running_outputs(path, numerics, prompts[0], forced, plant(fname))
            except Exception as e:  # the engine refuses the faulty model (e.g. no kernel for it)
                row.update(error=f"{type(e).__name__}: {e}", changes_model=None)
            else:
                row["changes_model"] = bool(not (np.array_equal(fo.prompt_logits, o.prompt_logits)
                                                 and np.array_equal(fo.decode_logits, o.decode_logits)))
                row.update(_sections(fo, ref.data["logits"], ref.data["decode_logits"]))
                row.update(_depth(fo, ref.data["l_out"], ref.data["decode_l_out"]))
            row["seconds"] = time.perf_counter() - t1
            fault_rows.append(row)
            log(f"{name}: fault {fname}: {row.get('error') or ('changes the model' if row['changes_model'] else 'n/a')}")
    out = {"family": family, "records": records, "faults": fault_rows, "prompts": prompts}
    if lm_head_check:
        out["lm_head"] = lm_head_rows(path, numerics, ref.data)
        log(f"{name}: lm_head check {out['lm_head']}")
    return out


def lm_head_rows(path: Path, numerics: str, data: dict) -> dict:
    """libllama's last-layer output through our final norm and lm_head, its input rounded to
    F16 or not, against libllama's logits: the largest relative max|d| per section (prompt:
    one multi-row batch; decode: single-row steps)."""
    from bitnet.model import BitNetModel
    from crossval.parity import position_metrics

    m = BitNetModel(path, profile=numerics, strict=False)
    try:
        from bitnet.model.bitnet_model import norm

        out = {"head_flavor": m.head_weight.flavor, "profile_lm_head_f16": bool(m.profile.lm_head_f16),
               "profile_single_row_f16": bool(m.profile.single_row_f16)}
        for sec, x, ref in (("prompt", data["l_out"][-1], data["logits"]),
                            ("decode", data.get("decode_l_out", np.zeros((1, 0, 0)))[-1], data["decode_logits"])):
            if not len(x):
                continue
            h = norm(np.asarray(x, np.float32), m.output_norm, m.config.rms_eps)
            for mode, xin in (("f16", h.astype(np.float16).astype(np.float32)), ("f32", h)):
                from bitnet.kernels.dispatch import matmul

                rows = [matmul(xin[i:i + 1], m.head_weight, "none")[0] for i in range(len(xin))] \
                    if sec == "decode" else matmul(xin, m.head_weight, "none")
                pm = position_metrics(np.asarray(rows, np.float32), np.asarray(ref, np.float32))
                out[f"{sec}_{mode}"] = {"max_rel_abs": max(p.rel_max_abs for p in pm),
                                        "max_one_minus_cos": max(p.one_minus_cos for p in pm), "rows": len(pm)}
        return out
    finally:
        m.close()


def main(argv: list[str] | None = None, io=None) -> int:
    p = argparse.ArgumentParser(prog="python -m crossval.deep_calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--pair", action="append", default=[], metavar="NAME=CPP_DIR:NUMERICS:MODEL")
    p.add_argument("--out", help="the calibration data (JSON, written atomically after each pair)")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--decode", type=int, default=8)
    p.add_argument("--faults", action="store_true")
    p.add_argument("--lm-head-check", action="store_true")
    p.add_argument("--resume", action="store_true", help="keep the pairs --out already holds")
    p.add_argument("--backend", default="native")
    p.add_argument("--report", metavar="JSON", help="judge a recorded run (crossval.deep.judge), print Markdown")
    p.add_argument("--margin", type=float, default=None,
                   help="logits bound = margin x the largest correct value (default: the recorded one, else 3)")
    p.add_argument("--depth-margin", type=float, default=None,
                   help="depth envelope = margin x the running largest correct value (default: recorded, else 10)")
    p.add_argument("--update-policy", action="store_true")
    a = p.parse_args(argv)
    out_io, err = (io.stdout, io.stderr) if io else (sys.stdout, sys.stderr)
    if a.report:
        from crossval import deep

        try:
            doc = deep.judge(json.loads(Path(a.report).read_text()), a.margin, depth_margin=a.depth_margin)
        except (OSError, ValueError, KeyError) as e:
            print(f"deep_calibrate: {a.report}: {e}", file=err)
            return 2
        out_io.write(deep.report_markdown(doc))
        if a.out:
            atomic_write_text(a.out, json.dumps(doc, indent=1) + "\n")
        if a.update_policy:
            deep.update_policy(doc, Path(a.out or a.report).name)
        return 0 if doc["verdict"]["ok"] else 1
    if not a.out or not a.pair:
        print("deep_calibrate: --out and at least one --pair are required (or --report JSON)", file=err)
        return 2
    pairs = []
    for spec in a.pair:
        name, _, rest = spec.partition("=")
        parts = rest.rsplit(":", 2)
        if not name or len(parts) != 3 or not Path(parts[2]).is_file():
            print(f"deep_calibrate: --pair {spec}: expected NAME=CPP_DIR:NUMERICS:MODEL with an existing MODEL", file=err)
            return 2
        pairs.append((name, parts[0], parts[1], Path(parts[2])))
    from bitnet.kernels import dispatch

    dispatch.set_backend(a.backend)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=err, flush=True)

    doc = json.loads(Path(a.out).read_text()) if a.resume and Path(a.out).exists() else {"pairs": {}}
    cmd = "python -m crossval.deep_calibrate " + " ".join(argv if argv is not None else sys.argv[1:])
    doc.update({"backend": a.backend, "decode": a.decode})
    doc["commands"] = [c for c in doc.get("commands", []) if c != cmd] + [cmd]  # one per invocation (--resume)
    for name, cpp, numerics, path in pairs:
        if name in doc["pairs"]:
            log(f"{name}: recorded already (--resume)")
            continue
        doc["pairs"][name] = {"cpp_dir": cpp, "numerics": numerics, "model": str(path), "prompts_asked": a.prompts,
                              **measure_pair(name, cpp, numerics, path, n_prompts=a.prompts, n_decode=a.decode,
                                             faults=a.faults, lm_head_check=a.lm_head_check, log=log)}
        doc["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_text(a.out, json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
