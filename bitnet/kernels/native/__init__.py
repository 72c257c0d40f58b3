"""Native CPU kernels (C, AVX2 with a scalar fallback, OpenMP over output rows) built with cffi
on first use through the project's one shim builder (bitnet.toolchain.ffi, AC6), cached per source hash,
compiler and flags (`-march=native`: the cache is per machine).

`native_status()` says whether they built and why not; a missing compiler makes the dispatcher
fall back to NumPy, which receipts record (the kernel ids say `numpy`), and strict mode refuses.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import numpy as np

from bitnet.errors import BridgeError
from bitnet.kernels.ids import KernelId

SOURCE = Path(__file__).with_name("kernels.c")
#: compiled as one translation unit, in this order (attention.c uses kernels.c's helpers)
SOURCES = (SOURCE, Path(__file__).with_name("attention.c"), Path(__file__).with_name("layer.c"))
CDEF = """
void bn_set_force_scalar(int v);
int bn_has_avx2(void);
int bn_simd_level(void);
int bn_openmp(void);
void bn_quant_i8_s(const float *x, int64_t T, int64_t K, int8_t *q, float *s, int32_t *sums);
void bn_quant_q8k(const float *x, int64_t T, int64_t K, int8_t *q, float *d, int32_t *bsums);
int bn_gemm_i2s(const uint8_t *w, int64_t out, int64_t K, const int8_t *xq, const float *xs, const int32_t *xsum,
                int64_t T, float wscale, float *y, int threads);
int bn_gemm_tq2_q8k(const uint8_t *w, int64_t out, int64_t K, const int8_t *xq, const float *xd,
                    const int32_t *bsums, int64_t T, float *y, int threads);
int bn_gemm_tq1_q8k(const uint8_t *w, int64_t out, int64_t K, const int8_t *xq, const float *xd,
                    const int32_t *bsums, int64_t T, float *y, int threads);
int bn_gemm_f16(const uint16_t *w, int64_t rows, int64_t K, const float *x, int64_t T, float *y, int threads);
int bn_linear_i2s(const uint8_t *w, int64_t out, int64_t K, const float *x, int64_t T, float wscale,
                  float *y, int threads);
int bn_linear_tq_q8k(int tq1, const uint8_t *w, int64_t out, int64_t K, const float *x, int64_t T,
                     float *y, int threads);
int bn_linear(int fmt, const uint8_t *w, int64_t out, int64_t K, const float *x, int64_t T, float wscale,
              float *y, int threads, int cap);
int bn_rms_norm(const float *x, int64_t T, int64_t D, const float *w, double eps, float *y);
void bn_rms_norm_ggml(const float *x, int64_t T, int64_t D, const float *w, float eps, float *y);
void bn_rope_neox(const float *x, int64_t T, int64_t H, int64_t hd, const float *cos, const float *sin, float *y);
void bn_relu2_mul(const float *gate, const float *up, int64_t n, float *y);
int bn_attn_ggml(const float *q, int64_t T, int64_t H, int64_t d, const void *k, const void *v,
                 int64_t Hkv, int64_t S, int64_t kv_head_stride, int kv_f16, int64_t pos0, float scale,
                 int q_f16, int build, float *out, float *scores, float *probs, int threads, int cap);
int bn_v_expf(const float *x, int64_t n, float *y, int cap);
typedef struct { const uint8_t *w; int64_t n_out, n_in; int fmt; float wscale; int has_scale; float scale; } bn_proj;
int bn_layer_qkv(const float *x, int64_t T, int64_t D, const float *attn_norm, double eps, int rms_ggml,
                 const bn_proj *pq, const bn_proj *pk, const bn_proj *pv, int fused_round,
                 const float *cos, const float *sin, int64_t H, int64_t Hkv, int64_t hd,
                 float *q, float *k, float *v, int threads, int cap, double *sec, int *var);
int bn_layer_mid(float *x, int64_t T, int64_t D, const float *o_in,
                 const float *q, int64_t H, int64_t hd, const void *K, const void *V, int64_t Hkv, int64_t S,
                 int64_t kv_head_stride, int kv_f16, int64_t pos0, float scale, int attn_build,
                 const float *attn_sub_norm, const float *ffn_norm, double eps, int rms_ggml,
                 const bn_proj *po, const bn_proj *pg, const bn_proj *pu, int fused_round,
                 float *gate, float *up, const float *ffn_sub_norm, const bn_proj *pd, int64_t F,
                 double *sec_ffn, int *var_ffn, int threads, int cap, double *sec, int *var);
int bn_layer_ffn(float *x, int64_t T, int64_t D, int64_t F, float *gate, const float *up, const float *f_in,
                 const float *ffn_sub_norm, double eps, int rms_ggml, const bn_proj *pd, int fused_round,
                 int threads, int cap, double *sec, int *var);
"""
FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-fast-math"]
#: tried in order: the first that compiles is used (a compiler without OpenMP, or one that does
#: not know -march=native, still gets kernels; their variant shows in native_status())
FLAG_SETS: tuple[tuple[list[str], list[str]], ...] = (
    (FLAGS, ["-fopenmp"]),
    (["-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math"], []),
    (["-O3", "-ffp-contract=off", "-fno-fast-math"], []),
)
#: force the portable scalar variant in every call (tests, A/B timing): BITNET_NATIVE_SCALAR=1
SCALAR_ENV = "BITNET_NATIVE_SCALAR"
#: keep AVX2 but not its VNNI form (vpdpbusd) where both were compiled in: BITNET_NATIVE_NO_VNNI=1
NO_VNNI_ENV = "BITNET_NATIVE_NO_VNNI"
#: what a kernel's return value means: the variant that ran, as it appears in kernel ids
VARIANTS = {0: "scalar", 1: "avx2", 2: "avxvnni"}
#: native_matmul(variant=...) -> the C cap argument (0 = best compiled in, 1 = scalar, 2 = AVX2 without VNNI)
CAPS = {"auto": 0, "scalar": 1, "avx2": 2}
#: skip the native kernels altogether (as if no compiler were there): BITNET_NATIVE=0
DISABLE_ENV = "BITNET_NATIVE"


def cpu_signature() -> str:
    """What -march=native compiles for: the CPU model and feature flags. It goes into the
    build's cache key (as a comment in the source), so a cache directory shared between
    machines never hands one CPU an extension built for another's instruction set."""
    import platform

    model, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            k = k.strip()
            if k in ("model name", "Processor", "CPU part") and model in ("", platform.machine(), platform.processor()):
                model = v.strip()
            if k in ("flags", "Features") and not flags:
                flags = " ".join(sorted(v.split()))
    except OSError:
        pass
    return f"{platform.machine()} | {model} | {flags}"


#: OpenMP's wait policy for our kernels' threads unless the user set OMP_WAIT_POLICY. libgomp's
#: default spins for a while after each parallel region; between the many small matmuls of a
#: decode step those spinning threads take the cores other processes (and our own next step)
#: need: on a loaded 2-core machine decode collapsed to ~3 tok/s from ~90 (issue 15). Passive
#: threads sleep on a futex instead. libgomp reads the variable once, when it loads. The price on
#: an idle machine is a futex wake per parallel region (12-20 us here); a native block call is
#: one region whose threads meet at our own spin-then-yield barriers (layer.c), so a 2B-4T step
#: has ~90 regions, not ~240. GOMP_SPINCOUNT=N (libgomp's own variable, honoured under PASSIVE
#: too) buys the rest back there and costs under load: docs/explanation/performance.md.
WAIT_POLICY = "PASSIVE"
_wait_policy: list[str] = ["unknown"]


@contextlib.contextmanager
def _omp_env_for_load():
    """Set OMP_WAIT_POLICY for the moment libgomp loads with our module, then restore the
    environment, so child processes (llama.cpp in crossval, benchmarks) keep their own default."""
    user = os.environ.get("OMP_WAIT_POLICY")
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    # GOMP_SPINCOUNT overrides the policy's spin count in libgomp (also under PASSIVE): threads
    # then spin that many rounds after a region before they sleep; say so, a receipt must not
    # call a spinning run passive
    spin = os.environ.get("GOMP_SPINCOUNT")
    spun = f", spins GOMP_SPINCOUNT={spin} rounds first" if spin else ""
    if "libgomp" in maps:
        _wait_policy[0] = f"{(user or 'default').lower()} (libgomp was already loaded){spun}"
        yield
        return
    if user:
        _wait_policy[0] = f"{user.lower()} (OMP_WAIT_POLICY){spun}"
        yield
        return
    os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    _wait_policy[0] = WAIT_POLICY.lower() + spun
    try:
        yield
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)


def wait_policy() -> str:
    """The OpenMP wait policy our kernels' threads got: `passive` (the default here), the user's
    OMP_WAIT_POLICY, or what an earlier-loaded libgomp had."""
    return _wait_policy[0]


def source_text() -> str:
    """The C sources as one translation unit (SOURCES in order). BridgeError naming the file
    when one is unreadable: an install that lost its C source falls back, it does not crash."""
    try:
        return "\n".join(p.read_text() for p in SOURCES)
    except OSError as e:
        raise BridgeError(f"native kernel source {e.filename} is unreadable ({e.strerror}); "
                          "reinstall bitnet-harness or use --backend numpy") from None


@functools.cache
def _module():
    from bitnet.settings import settings
    from bitnet.toolchain.ffi import build_shim

    if not settings().native:
        raise BridgeError(f"native kernels disabled by {DISABLE_ENV}=0")
    source = f"/* built for: {cpu_signature()} */\n" + source_text()
    errors = []
    for cflags, lflags in FLAG_SETS:
        try:
            with _omp_env_for_load():
                m = build_shim("bitnet_native_kernels", source, CDEF,
                               extra_compile_args=cflags, extra_link_args=lflags)
            m.lib.bn_set_force_scalar(_env_cap())  # the fused/dispatcher entry points
            return m
        except BridgeError as e:
            if "no C compiler" in str(e):
                raise
            errors.append(f"{' '.join(cflags)}: {e}")
    raise BridgeError("the native kernels did not compile with any flag set:\n" + "\n".join(errors))


def native_status() -> tuple[bool, str]:
    """(available, reason): whether the native kernels built here, and which variant they run
    or why they did not build (no compiler, a compile error: the message says)."""
    try:
        m = _module()
    except BridgeError as e:
        return False, str(e)
    simd = {0: "scalar", 1: "AVX2", 2: "AVX2 + VNNI"}[m.lib.bn_simd_level()]
    if _env_cap() == 1:
        simd += f", scalar forced by {SCALAR_ENV}"
    elif _env_cap() == 2:
        simd += f", VNNI off by {NO_VNNI_ENV}"
    omp = f"OpenMP, {wait_policy()} wait" if m.lib.bn_openmp() else "single-threaded"
    return True, f"native kernels built ({simd}, {omp})"


def require_native(strict: bool | None = None) -> bool:
    """True when the native kernels are usable. When they are not: in strict mode a
    StrictModeError (a NumPy fallback would be a silent downgrade), otherwise False, and the
    reason stays readable through native_status() (callers record it)."""
    from bitnet.errors import StrictModeError, strict_enabled

    ok, why = native_status()
    if not ok and strict_enabled(strict):
        raise StrictModeError(f"native kernels unavailable ({why}); strict mode refuses the NumPy fallback")
    return ok


def lib():
    return _module().lib


def ffi():
    return _module().ffi


def default_threads() -> int:
    from bitnet.settings import settings

    n = settings().threads
    return n if n else (os.cpu_count() or 1)


def _env_cap() -> int:
    from bitnet.settings import settings

    s = settings()
    if s.native_scalar:
        return CAPS["scalar"]
    if s.native_no_vnni:
        return CAPS["avx2"]
    return CAPS["auto"]


def best_variant() -> str:
    """The variant an unconstrained call runs here: `avxvnni`, `avx2` or `scalar` (after the
    BITNET_NATIVE_SCALAR / BITNET_NATIVE_NO_VNNI caps)."""
    level = lib().bn_simd_level()
    cap = _env_cap()
    if cap == 1:
        level = 0
    elif cap == 2:
        level = min(level, 1)
    return VARIANTS[level]


def variant_name(v: int) -> str:
    """The name of a kernel's return value (the variant that ran); negative = out of memory."""
    if v < 0:
        raise MemoryError("native kernel could not allocate its activation buffers")
    return VARIANTS[v]


#: (format, activation profile) -> (C fmt code, kernel id stem, block elements)
KERNELS = {
    ("i2_s", "per-token-absmax"): (0, "i2s_x86", 128),
    ("tq2_0", "q8_k-block256"): (1, "tq2_0", 256),
    ("tq1_0", "q8_k-block256"): (2, "tq1_0", 256),
}
_BYTES = {"i2_s": lambda n: n // 4 + 4, "tq2_0": lambda n: n // 256 * 66, "tq1_0": lambda n: n // 256 * 54}


def native_matmul(x: np.ndarray, raw: np.ndarray, fmt: str, out_features: int, in_features: int,
                  profile: str, threads: int | None = None, *, variant: str = "auto") -> tuple[np.ndarray, str]:
    """y [T, out] f32 = x [T, in] f32 times a packed weight, as it sits in the GGUF file.

    `raw` is the tensor's bytes (`GGUFReader.raw(name)`, zero-copy): for `i2_s` (Microsoft x86
    layout) the n/4 code bytes followed by the f32 weight scale; for `tq2_0`/`tq1_0` the blocks
    with their f16 scales. The activations are quantized in C with `profile`'s quantizer
    (`per-token-absmax` for I2_S, `q8_k-block256` for TQ*), bit-identical to the definitions in
    FORMATS.md; integer dot products are exact (int32). `variant`: "auto" (AVX2 when compiled
    in: AVX2 with VNNI where the CPU has it, unless BITNET_NATIVE_SCALAR=1 or
    BITNET_NATIVE_NO_VNNI=1), "avx2" (no VNNI) or "scalar". Returns (y, kernel_id), the id naming
    the variant that actually ran, e.g. `i2s_x86_avxvnni_gemv`, `tq1_0_scalar_gemm`.
    Raises BridgeError when the kernels are unavailable (see native_status()), FormatError for
    a (fmt, profile) pair without a kernel or a mis-sized buffer."""
    from bitnet.errors import ConfigError, FormatError

    key = KERNELS.get((fmt, profile))
    if key is None:
        raise FormatError(f"no native kernel for {fmt} weights with {profile} activations; "
                          f"native pairs: {sorted(KERNELS)}")
    code, stem, blk = key
    if in_features % blk or in_features <= 0 or out_features <= 0:
        raise FormatError(f"{fmt}: in_features {in_features} must be a positive multiple of {blk}")
    if variant not in CAPS:
        raise ConfigError(f"variant must be one of {sorted(CAPS)}, got {variant!r}")
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != in_features:
        raise FormatError(f"activations of shape {x.shape} for a weight of {in_features} inputs")
    raw = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    n = out_features * in_features
    need = _BYTES[fmt](n)
    if raw.size < need:
        raise FormatError(f"{fmt} [{out_features}x{in_features}] needs {need} bytes, got {raw.size}")
    wscale = float(raw[n // 4: n // 4 + 4].view(np.float32)[0]) if fmt == "i2_s" else 0.0
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    m = _module()
    t = x.shape[0]
    y = np.empty((t, out_features), np.float32)
    cap = CAPS[variant] or _env_cap()  # an explicit variant wins; "auto" obeys the environment
    if variant == "avx2" and _env_cap() == 1:
        cap = 1
    v = m.lib.bn_linear(code, m.ffi.from_buffer("uint8_t[]", raw), out_features, in_features,
                        m.ffi.from_buffer("float[]", x), t, wscale, m.ffi.from_buffer("float[]", y),
                        threads, cap)
    return y, KernelId(stem, "", "gemv" if t == 1 else "gemm", "native", variant_name(v)).render()
