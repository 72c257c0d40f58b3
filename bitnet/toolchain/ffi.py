"""The one shim builder of the project (AC6): compile a small C source with cffi (API mode)
into a per-user cache keyed by everything that affects the binary, and import it.

The key hashes the source, the cdef, the compiler's `--version`, every flag and the contents
of the headers in the include dirs, so a new compiler, new flags or a changed llama.h each give
a fresh build, and an unchanged one is reused. Third-party include dirs are passed as
`-isystem` (their warnings are not ours). The build happens in a temporary folder and the
finished extension is renamed into place, so concurrent builds cannot see half a file.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import types
from collections.abc import Sequence
from pathlib import Path

from bitnet.errors import BridgeError
from bitnet.files.cache import cache_dir


def compiler() -> str:
    """$CC, else the compiler Python was built with, else `cc`."""
    if os.environ.get("CC"):
        return os.environ["CC"].split()[0]
    cfg = sysconfig.get_config_var("CC")
    return cfg.split()[0] if cfg else "cc"


def compiler_version(cc: str | None = None) -> str:
    cc = cc or compiler()
    try:
        r = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BridgeError(f"no C compiler: {cc!r} could not run ({e}); install gcc or clang, or set CC") from None
    if r.returncode != 0:
        raise BridgeError(f"C compiler {cc!r} --version failed: {r.stderr.strip()}")
    return r.stdout.splitlines()[0] if r.stdout else cc


def _headers_digest(dirs: Sequence[str | os.PathLike[str]]) -> str:
    h = hashlib.sha256()
    for d in dirs:
        for p in sorted(Path(d).glob("*.h")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def build_shim(
    name: str,
    c_source: str,
    cdef: str,
    *,
    include_dirs: Sequence[str | os.PathLike[str]] = (),
    system_include_dirs: Sequence[str | os.PathLike[str]] = (),
    library_dirs: Sequence[str | os.PathLike[str]] = (),
    libraries: Sequence[str] = (),
    extra_compile_args: Sequence[str] = (),
    extra_link_args: Sequence[str] = (),
) -> types.ModuleType:
    """Build (or reuse) the cffi extension `name` and return the imported module (.ffi, .lib)."""
    import cffi

    cc = compiler()
    key_parts = [name, c_source, cdef, compiler_version(cc), sys.version, cffi.__version__,
                 repr([str(x) for x in include_dirs]), repr([str(x) for x in system_include_dirs]),
                 repr([str(x) for x in library_dirs]), repr(list(libraries)),
                 repr(list(extra_compile_args)), repr(list(extra_link_args)),
                 _headers_digest([*include_dirs, *system_include_dirs])]
    key = hashlib.sha256("\0".join(key_parts).encode()).hexdigest()[:20]
    out_dir = cache_dir("ffi", f"{name}-{key}")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    target = out_dir / f"{name}{suffix}"
    if not target.is_file():
        ffi = cffi.FFI()
        ffi.cdef(cdef)
        args = [*extra_compile_args]
        for d in system_include_dirs:
            args += ["-isystem", str(d)]
        rpath = [f"-Wl,-rpath,{Path(d).resolve()}" for d in library_dirs]
        ffi.set_source(name, c_source, include_dirs=[str(d) for d in include_dirs],
                       library_dirs=[str(d) for d in library_dirs], libraries=list(libraries),
                       extra_compile_args=args, extra_link_args=[*extra_link_args, *rpath])
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            try:
                built = ffi.compile(tmpdir=tmp, verbose=False)
            except Exception as e:  # distutils/setuptools raise several types (CompileError, LinkError)
                raise BridgeError(f"building the C shim {name!r} failed: {e}") from None
            os.replace(built, target)
            shutil.rmtree(tmp, ignore_errors=True)
    spec = importlib.util.spec_from_file_location(name, target)
    if spec is None or spec.loader is None:
        raise BridgeError(f"cannot import the built shim {target}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        raise BridgeError(f"the shim {target} does not load: {e}") from None
    return module
