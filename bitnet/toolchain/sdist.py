"""llama.cpp's sources, as vendored by the `llama-cpp-python` sdist on PyPI.

The sdist is the one place this project obtains llama.cpp from: its test vocabularies
(`models/ggml-vocab-*.gguf` with `.inp`/`.out` vectors) and the C++ reference that crossval
builds. Downloaded with pip into the cache, verified, unpacked once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from bitnet.errors import BitNetError
from bitnet.files.atomic import atomic_open
from bitnet.files.cache import cache_dir

LLAMA_CPP_PYTHON_VERSION = "0.3.36"


class SdistError(BitNetError):
    """The sdist could not be downloaded or unpacked."""


def sdist_root(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """The unpacked `vendor/llama.cpp` folder of the sdist, downloading it on first use."""
    base = cache_dir("sdist")
    root = base / f"llama_cpp_python-{version}"
    vendored = root / "vendor" / "llama.cpp"
    if (vendored / "include" / "llama.h").is_file():
        return vendored
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"llama-cpp-python=={version}", "-d", tmp]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SdistError(f"pip could not download llama-cpp-python=={version}: {r.stderr.strip()[-500:]}")
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if not archives:
            raise SdistError(f"pip downloaded no sdist into {tmp}")
        with tarfile.open(archives[0]) as tar:
            tar.extractall(tmp, filter="data")
        unpacked = Path(tmp) / f"llama_cpp_python-{version}"
        if not (unpacked / "vendor" / "llama.cpp" / "include" / "llama.h").is_file():
            raise SdistError(f"{archives[0].name} has no vendor/llama.cpp/include/llama.h")
        if root.exists():
            shutil.rmtree(root)
        unpacked.rename(root)
    return vendored


def extract_vocab(dest: str | Path, version: str = LLAMA_CPP_PYTHON_VERSION) -> list[Path]:
    """Copy every `models/ggml-vocab-*` file (vocab GGUFs and their test vectors) to dest."""
    out = Path(dest)
    if out.exists() and not out.is_dir():
        raise SdistError(f"{out}: exists and is not a directory; refusing to replace it")
    models = sdist_root(version) / "models"
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for f in sorted(models.glob("ggml-vocab-*")):
        # each file appears complete or not at all, even if the copy is interrupted
        with open(f, "rb") as src, atomic_open(out / f.name) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        copied.append(out / f.name)
    if not copied:
        raise SdistError(f"{models} holds no ggml-vocab-* files")
    return copied
