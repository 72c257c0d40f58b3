"""`--backend`, `--threads` and `--weights` for the commands that run the model (run, logits, benchmark).

One place decides which kernels run, so `bitnet run` and the receipt of `bitnet benchmark`
can never disagree about it: `cpu` (the default, or BITNET_BACKEND) takes the native C kernels
when they build here and otherwise the NumPy reference kernels, saying so on stderr (never
silently) and refusing in strict mode; `numpy` and `native` are explicit; `cuda` exists for the
benchmark only. `--weights` says where the model file's bytes live: mapped (`mmap`) or read into
private memory with huge pages (`memory`); unset, BitNetModel takes BITNET_WEIGHTS, else mmap.
"""

from __future__ import annotations

import argparse

from bitnet.cli.args import positive
from bitnet.errors import ConfigError
from bitnet.gguf.reader import RESIDENCIES
from bitnet.kernels import dispatch

BACKEND_ENV = "BITNET_BACKEND"
WEIGHTS_ENV = "BITNET_WEIGHTS"


def add_backend_args(p: argparse.ArgumentParser, *, cuda: bool = False) -> None:
    choices = ("cpu", "numpy", "native") + (("cuda",) if cuda else ())
    p.add_argument("--backend", choices=choices, default=None,
                   help=f"kernels to run (default: ${BACKEND_ENV}, else cpu): cpu = native C kernels when they "
                        "build here, else numpy with a note on stderr; numpy = reference kernels; "
                        "native = C kernels or an error" + ("; cuda = CuPy kernels (SKIP without a GPU)" if cuda else ""))
    p.add_argument("--threads", type=positive, default=None,
                   help="threads for the native kernels (default: $BITNET_THREADS, else every core; "
                        "OpenMP threads wait passively, so a busy machine does not collapse decode)")
    p.add_argument("--weights", choices=RESIDENCIES, default=None,
                   help=f"where the model file's bytes live (default: ${WEIGHTS_ENV}, else mmap): mmap = the file "
                        "mapped, paged in on use (like llama.cpp); memory = read once into private memory with "
                        "transparent huge pages (fewer TLB misses in decode; refused when MemAvailable is short)")


def select_backend(args: argparse.Namespace, io, command: str) -> str:
    """Set the dispatcher's backend for this process from --backend / BITNET_BACKEND and return
    the one that will run: `numpy`, `native`, `cuda`, or `skip:<why>` for cuda without a GPU."""
    from bitnet.settings import settings

    name = args.backend or settings().backend or "cpu"
    allowed = ("cpu", "numpy", "native", "cuda") if command == "benchmark" else ("cpu", "numpy", "native")
    if name not in allowed:
        raise ConfigError(f"{BACKEND_ENV}={name!r}: bitnet {command} takes one of {', '.join(allowed)}")
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    if name == "numpy":
        dispatch.set_backend("numpy")
        return "numpy"
    if name == "cuda":
        from bitnet.kernels.cuda import cuda_status

        ok, why = cuda_status()
        if not ok:
            return "skip:" + why
        dispatch.set_backend("cuda")
        return "cuda"
    ran = dispatch.activate(name, strict=getattr(args, "strict", None), who=f"bitnet {command}",
                            stderr=io.stderr)
    if ran == "numpy":
        return "numpy"
    if threads is not None:
        from bitnet.kernels.native.backend import set_threads

        set_threads(threads)
    return "native"


def native_threads(backend: str) -> int | None:
    """The thread count the native kernels run with, or None for another backend."""
    if backend != "native":
        return None
    from bitnet.kernels.native.backend import THREADS

    return THREADS[0]
