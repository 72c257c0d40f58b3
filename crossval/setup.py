"""Build the C++ reference: `python -m crossval.setup [--cache DIR] [--jobs N] [--print-dir]`.

Obtains upstream llama.cpp from the llama-cpp-python sdist on PyPI (pinned version, see
bitnet.toolchain.sdist), builds `libllama` CPU-only with CMake into the cache, copies llama.cpp's vocab
test files next to it, and prints the folder to pass as `--bitnet-cpp-dir`. A second run finds
the stamp file and reuses the build. Expect about 12 minutes on 2 cores the first time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bitnet.errors import BridgeError
from bitnet.files.atomic import atomic_write_text
from bitnet.files.cache import cache_dir
from bitnet.progress import add_quiet_arg, progress
from bitnet.toolchain.sdist import LLAMA_CPP_PYTHON_VERSION, extract_vocab, sdist_root

CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DGGML_NATIVE=ON", "-DGGML_OPENMP=ON",
    "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_COMMON=OFF", "-DGGML_CUDA=OFF",
]
STAMP = "bitnet-reference.json"


def reference_dir(version: str = LLAMA_CPP_PYTHON_VERSION, cache: str | None = None) -> Path:
    base = Path(cache) if cache else cache_dir("reference")
    return base / f"llama.cpp-{version}"


def is_built(root: Path) -> bool:
    stamp = root / STAMP
    if not stamp.is_file():
        return False
    try:
        data = json.loads(stamp.read_text())
    except json.JSONDecodeError:
        return False
    return data.get("flags") == CMAKE_FLAGS and Path(data.get("libllama", "")).is_file()


def build(version: str = LLAMA_CPP_PYTHON_VERSION, cache: str | None = None, jobs: int | None = None,
          log=sys.stderr, quiet: bool = False) -> Path:
    """Build (or find) the reference. Progress (spinner, then a bar over CMake's percentages)
    goes to `log` when it is a terminal and not `quiet`."""
    root = reference_dir(version, cache)
    if is_built(root):
        return root
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise BridgeError(f"building the reference needs {tool!r} on PATH")
    with progress(f"llama-cpp-python {version} sdist (pip download, unpack)", stream=log, quiet=quiet):
        src = sdist_root(version)
    root.mkdir(parents=True, exist_ok=True)
    # the source tree the build uses, next to the build (headers are read from here later)
    tree = root / "llama.cpp"
    if not (tree / "include" / "llama.h").is_file():
        if tree.exists():
            shutil.rmtree(tree)
        shutil.copytree(src, tree, ignore=shutil.ignore_patterns("build", ".git"))
    bdir = tree / "build"
    t0 = time.perf_counter()
    print(f"crossval.setup: configuring llama.cpp (llama-cpp-python {version}) in {bdir}", file=log)
    with progress("cmake: configuring llama.cpp", stream=log, quiet=quiet):
        _run(["cmake", "-S", str(tree), "-B", str(bdir), *CMAKE_FLAGS], log)
    print(f"crossval.setup: building libllama with {jobs or os.cpu_count()} jobs (about 12 min on 2 cores)", file=log)
    with progress("cmake: building libllama", total=100, stream=log, quiet=quiet) as update:
        _run(["cmake", "--build", str(bdir), "-j", str(jobs or os.cpu_count() or 2), "--target", "llama"], log,
             on_line=lambda line: _cmake_percent(line, update))
    lib = next((p for p in bdir.rglob("libllama.so") if p.is_file()), None) or \
        next((p for p in bdir.rglob("libllama.dylib") if p.is_file()), None)
    if lib is None:
        raise BridgeError(f"the build in {bdir} produced no libllama shared library")
    extract_vocab(root / "vocab", version)
    atomic_write_text(root / STAMP, json.dumps({
        "llama_cpp_python": version, "flags": CMAKE_FLAGS, "libllama": str(lib),
        "build_seconds": round(time.perf_counter() - t0, 1),
    }, indent=2))
    print(f"crossval.setup: built in {time.perf_counter() - t0:.0f} s", file=log)
    return root


_PERCENT = re.compile(r"^\[\s*(\d+)%\]\s*(.*)")


def _cmake_percent(line: str, update) -> None:
    """`[ 45%] Building CXX object src/CMakeFiles/llama.dir/llama.cpp.o` -> the bar at 45 %."""
    m = _PERCENT.match(line)
    if m:
        what = m.group(2).rsplit("/", 1)[-1][:60]
        update(completed=int(m.group(1)), what=f"cmake: building libllama ({what})")


def _run(cmd: list[str], log, on_line=None) -> None:
    """Run `cmd`, its output kept for the error message; `on_line` sees stdout as it comes."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    err_lines: list[str] = []
    import threading

    t = threading.Thread(target=lambda: err_lines.extend(p.stderr), daemon=True)
    t.start()
    for line in p.stdout:
        out.append(line)
        if on_line is not None:
            on_line(line)
    rc = p.wait()
    t.join()
    if rc != 0:
        stdout, stderr = "".join(out), "".join(err_lines)
        raise BridgeError(f"{' '.join(cmd[:3])} ... failed ({rc}):\n{stdout[-2000:]}\n{stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m crossval.setup", description=__doc__.splitlines()[0])
    ap.add_argument("--version", default=LLAMA_CPP_PYTHON_VERSION, help="llama-cpp-python sdist version")
    ap.add_argument("--cache", help="cache folder (default: ~/.cache/bitnet-harness/reference)")
    ap.add_argument("--jobs", type=int, help="parallel build jobs (default: cores)")
    ap.add_argument("--print-dir", action="store_true", help="only print the folder (build if needed)")
    add_quiet_arg(ap)
    args = ap.parse_args(argv)
    try:
        root = build(args.version, args.cache, args.jobs, quiet=args.quiet)
    except BridgeError as e:
        print(f"crossval.setup: error: {e}", file=sys.stderr)
        return 2
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
