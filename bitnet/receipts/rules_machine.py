"""Machine rules: what the receipt claims against physical ceilings, the bandwidth probe the run
recorded, and the allowlists, which bound known machines independently of what a receipt says
about itself. One function per rule; see `rules.py`."""

from __future__ import annotations

from collections.abc import Iterator

from bitnet.receipts.rules import SKIP, Ctx, Outcome, ok, rule


def _gpu_entry(c: Ctx) -> dict | None:
    gpu = c.r["machine"].get("gpu")
    if not c.gpu_allowlist or not gpu:
        return None
    for e in c.gpu_allowlist.get("gpus", []) or []:
        if e["name"] == gpu["name"] and str(e["compute_capability"]) == gpu["compute_capability"]:
            return e
    return None


@rule("R-BANDWIDTH-CEILING", "decode tok/s x weight bytes per step <= the backend's ceiling (policy bandwidth_ceiling_bytes_per_s), tightened to the allowlist entry's max_bytes_per_s for a listed GPU", needs=("decode_kernels", "timings.decode_step_s", "throughput.decode_tok_s"))
def bandwidth_ceiling(c: Ctx) -> Iterator[Outcome]:
    backend, tp = c.r["backend"], c.r["throughput"]
    table = c.pol["bandwidth_ceiling_bytes_per_s"]
    if backend in table:
        ceiling, where = float(table[backend]), f"the {backend} ceiling"
    else:  # an engine kind: it may run anywhere, so only the highest ceiling binds it
        ceiling, where = max(map(float, table.values())), f"the highest ceiling (a {backend} engine may run on any device)"
    entry = _gpu_entry(c) if backend == "cuda" else None
    if entry is not None and float(entry["max_bytes_per_s"]) < ceiling:
        ceiling, where = float(entry["max_bytes_per_s"]), f"the allowlist bound for {entry['name']} ({entry['compute_capability']})"
    yield ok(c.decode_rate <= ceiling, f"decode reads {c.decode_rate:.3g} B/s ({tp['decode_tok_s']:.4g} tok/s x "
             f"{c.weight_bytes_per_step:,.0f} B/step); {where} is {ceiling:.3g} B/s")


@rule("R-GPU-ALLOWLIST", "a cuda receipt above the generic bound (policy gpu_plausible_bytes_per_s) has its GPU (name, compute capability) in the allowlist")
def gpu_allowlist(c: Ctx) -> Iterator[Outcome]:
    if c.r["backend"] != "cuda":
        return
    bound, gpu, entry = float(c.pol["gpu_plausible_bytes_per_s"]), c.r["machine"].get("gpu"), _gpu_entry(c)
    if c.decode_rate <= bound:
        yield ok(True, f"{c.decode_rate:.3g} B/s is within the generic GPU bound {bound:.3g} B/s")
    else:
        fp = gpu and f"{gpu['name']} ({gpu['compute_capability']})"
        yield ok(entry is not None, f"{c.decode_rate:.3g} B/s exceeds the generic GPU bound {bound:.3g} B/s; GPU {fp} "
                 + ("is in the allowlist" if entry else "is not in the allowlist"))


def _dram_sized(c: Ctx) -> bool:
    """Bandwidth bounds of DRAM apply only when the CPU side's weights per step outgrow every
    cache (policy dram_min_working_set_bytes); a small model may legitimately stream from cache."""
    return c.cpu_weight_bytes_per_step >= c.pol["dram_min_working_set_bytes"]


def _cpu_rate(c: Ctx) -> float:
    return c.r["throughput"]["decode_tok_s"] * c.cpu_weight_bytes_per_step


@rule("R-BANDWIDTH-PROBE", "the run's own memory-bandwidth probe is plausible for the machine, and the CPU side's decode bytes/s <= probe x policy probe_margin")
def bandwidth_probe(c: Ctx) -> Iterator[Outcome]:
    probe = c.r["machine"].get("memory_bandwidth")
    if probe is None:
        yield (SKIP, "the receipt records no memory-bandwidth probe (machine.memory_bandwidth): not checked")
        return
    bound, where = _cpu_bound(c, probe["threads"])
    yield ok(probe["bytes_per_s"] <= bound, f"the probe measured {probe['bytes_per_s']:.3g} B/s with {probe['threads']} "
             f"thread(s) ({probe['method']}); {where} is {bound:.3g} B/s")
    lacking = c.missing(["decode_kernels", "timings.decode_step_s", "throughput.decode_tok_s"])
    if lacking:
        yield (SKIP, c.cannot_run(lacking) + " (the decode bytes/s bound against the probe)")
    elif _dram_sized(c):
        cap = probe["bytes_per_s"] * c.pol["probe_margin"]
        yield ok(_cpu_rate(c) <= cap, f"CPU-side decode reads {_cpu_rate(c):.3g} B/s; the run's probe allows "
                 f"{cap:.3g} B/s ({c.pol['probe_margin']} x {probe['bytes_per_s']:.3g})")


def _cpu_bound(c: Ctx, threads: int) -> tuple[float, str]:
    """The bytes/s bound of this CPU with `threads` threads: its allowlist entry when listed,
    else the generic per-core bound; never above the flat CPU ceiling."""
    e = c.cpu_entry
    if e is not None:
        b = float(e["max_bytes_per_s_per_thread"]) * threads
        where = f"the CPU allowlist bound for {e['name']!r} ({e['max_bytes_per_s_per_thread']:.3g} B/s per thread x {threads})"
    else:
        b = float(c.pol["generic_cpu_bytes_per_s_per_core"]) * threads
        where = (f"the generic bound for an unlisted CPU ({c.pol['generic_cpu_bytes_per_s_per_core']:.3g} B/s per core "
                 f"x {threads})")
    return min(b, float(c.pol["bandwidth_ceiling_bytes_per_s"]["native"])), where


@rule("R-CPU-CEILING", "the CPU side's decode bytes/s <= the CPU allowlist entry's per-thread bound x threads, or the generic per-core bound for an unlisted CPU (policies/cpu-allowlist.yml, policy generic_cpu_bytes_per_s_per_core)", needs=("decode_kernels", "timings.decode_step_s", "throughput.decode_tok_s"))
def cpu_ceiling(c: Ctx) -> Iterator[Outcome]:
    if not _dram_sized(c):
        yield ok(True, f"{c.cpu_weight_bytes_per_step:,.0f} CPU weight bytes per step fit in cache-sized working sets "
                 f"(< {c.pol['dram_min_working_set_bytes']:,}): no DRAM bound applies")
        return
    bound, where = _cpu_bound(c, c.cpu_threads)
    yield ok(_cpu_rate(c) <= bound, f"CPU-side decode reads {_cpu_rate(c):.3g} B/s; {where} is {bound:.3g} B/s")


@rule("R-CPU-CALL-FLOOR", "on a CPU in the allowlist, no kernel record averages below the entry's measured per-call floor for that kernel (policies/cpu-allowlist.yml min_call_seconds)", needs=("kernels", "decode_kernels"))
def cpu_call_floor(c: Ctx) -> Iterator[Outcome]:
    e = c.cpu_entry
    if e is None:
        yield (SKIP, f"CPU {c.r['machine']['cpu']!r} is not in the CPU allowlist: only the generic floors of R-KERNEL-FLOOR apply")
        return
    floors = e.get("min_call_seconds") or {}
    bad = [f"{k['id']} {k['seconds'] / k['calls']:.3g} s/call < {floors[k['id']]:.3g}"
           for k in c.kernels + c.decode if k["id"] in floors and k["seconds"] < k["calls"] * float(floors[k["id"]])]
    yield ok(not bad, f"kernels faster per call than {e['name']!r} has ever run them: {bad[:4]}" if bad
             else f"every listed kernel is above {e['name']!r}'s per-call floors")


from bitnet.receipts import rules_model  # noqa: E402,F401  (the next rules in the table)
