"""Every `BITNET_*` environment variable, parsed in one place.

Each variable has one parser here and nowhere else, so the CLI and library use can never read
the same variable two ways (they did: `BITNET_BACKEND=cpu` worked in the CLI and was "unknown"
in the dispatcher; `BITNET_STRICT_MODE=2` silently meant off). A value that does not parse is a
`ConfigError` naming the variable, the value and what is allowed (pytest-timeout's
`get_env_settings` is the model). Empty counts as unset.

`settings()` parses the environment once per distinct set of `BITNET_*` values (tests that
monkeypatch a variable get a fresh parse; a long run pays for one).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bitnet.errors import ConfigError

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
BACKENDS = ("cpu", "numpy", "native", "cuda")


def parse_bool(name: str, value: str) -> bool:
    """The one truthy parser: 1/true/yes/on or 0/false/no/off (any case); anything else is an
    error, never a silent 'off'."""
    v = value.strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise ConfigError(f"{name}={value!r}: expected one of {', '.join(TRUE)} (on) or "
                      f"{', '.join(FALSE)} (off)")


def _int(minimum: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, value: str) -> int:
        try:
            n = int(value.strip())
        except ValueError:
            raise ConfigError(f"{name}={value!r}: expected an integer"
                              + (f" >= {minimum}" if minimum is not None else "")) from None
        if minimum is not None and n < minimum:
            raise ConfigError(f"{name}={value!r}: expected an integer >= {minimum}")
        return n
    return parse


def _choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, value: str) -> str:
        v = value.strip().lower()
        if v not in options:
            raise ConfigError(f"{name}={value!r}: expected one of {', '.join(options)}")
        return v
    return parse


def _path(name: str, value: str) -> Path:
    return Path(value).expanduser()


@dataclass(frozen=True)
class Var:
    name: str
    parse: Callable[[str, str], Any]
    default: Any
    help: str


#: field name -> variable. The table is the documentation (docs/reference/settings.md is checked
#: against it by a test).
VARS: dict[str, Var] = {
    "strict": Var("BITNET_STRICT_MODE", parse_bool, False,
                  "strict mode: every fallback and within-tolerance decision is an error"),
    "backend": Var("BITNET_BACKEND", _choice(BACKENDS), None,
                   "kernels to run: cpu (native when it builds, else numpy with a note), numpy, "
                   "native, cuda; unset: the CLI uses cpu, library use numpy"),
    "threads": Var("BITNET_THREADS", _int(1), None,
                   "threads for the native kernels (default: every core; they wait passively, see docs/explanation/performance.md) "
                   "and for the NumPy backend's exact integer kernels, which split a weight's row chunks (default: every core, at most 8)"),
    "seed": Var("BITNET_SEED", _int(0), None, "sampling seed"),
    "deterministic": Var("BITNET_DETERMINISTIC", parse_bool, False,
                         "deterministic runs: seed 0 unless BITNET_SEED is set"),
    "native": Var("BITNET_NATIVE", parse_bool, True,
                  "off: never build or use the native kernels (as if no compiler were there)"),
    "native_scalar": Var("BITNET_NATIVE_SCALAR", parse_bool, False,
                         "force the portable scalar variant of the native kernels"),
    "native_no_vnni": Var("BITNET_NATIVE_NO_VNNI", parse_bool, False,
                          "native kernels: AVX2 without its VNNI form"),
    "numpy_cache": Var("BITNET_NUMPY_CACHE", _choice(("off", "int8", "f32")), "off",
                       "NumPy backend: keep decoded weights in memory (int8: ternary values as int8, 4x the "
                       "packed bytes, plus F16/BF16 matrices as float32; f32: ternary values as float32 too, "
                       "16x); refused with an error when MemAvailable is short; off: decode every call"),
    "weights": Var("BITNET_WEIGHTS", _choice(("mmap", "memory")), "mmap",
                   "where the model file's bytes live: mmap (the file mapped shared, paged in on use, like "
                   "llama.cpp's default) or memory (read once into private anonymous memory with transparent "
                   "huge pages where the kernel offers them: fewer TLB misses per decode step, 0-7% faster decode "
                   "measured on an AVX2 AMD EPYC; refused with an error when MemAvailable is short)"),
    "cache_dir": Var("BITNET_CACHE_DIR", _path, None,
                     "where built things go (default $XDG_CACHE_HOME/bitnet-harness or ~/.cache/bitnet-harness)"),
    "schema_dir": Var("BITNET_SCHEMA_DIR", _path, None, "JSON schemas folder (default: the repository's or the wheel's)"),
    "policy_dir": Var("BITNET_POLICY_DIR", _path, None, "policies folder (default: the repository's or the wheel's)"),
    "vocab_dir": Var("BITNET_VOCAB_DIR", _path, None, "llama.cpp vocab test files (tests, fetch_vocab)"),
    "cpp_dir": Var("BITNET_CPP_DIR", _path, None, "C++ reference build dir (pytest --bitnet-cpp-dir default)"),
    "gguf": Var("BITNET_GGUF", _path, None, "the user's model (pytest --bitnet-gguf default)"),
    "kernel_config": Var("BITNET_KERNEL_CONFIG", _path, None,
                         "bitnet.cpp kernel_config.ini (or a bitnet.cpp checkout) for TL1/TL2 files that do not "
                         "carry their kernel config; BITNET_CPP_DIR's include/kernel_config.ini is tried after it"),
}


@dataclass(frozen=True)
class Settings:
    strict: bool = False
    backend: str | None = None
    threads: int | None = None
    seed: int | None = None
    deterministic: bool = False
    native: bool = True
    native_scalar: bool = False
    native_no_vnni: bool = False
    numpy_cache: str = "off"
    weights: str = "mmap"
    cache_dir: Path | None = None
    schema_dir: Path | None = None
    policy_dir: Path | None = None
    vocab_dir: Path | None = None
    cpp_dir: Path | None = None
    gguf: Path | None = None
    kernel_config: Path | None = None


assert {f.name for f in fields(Settings)} == set(VARS)


def parse_env(env: Mapping[str, str]) -> Settings:
    """Parse every known `BITNET_*` variable of `env`; the first bad one raises ConfigError."""
    values = {}
    for key, var in VARS.items():
        raw = env.get(var.name)
        values[key] = var.default if raw is None or raw.strip() == "" else var.parse(var.name, raw)
    return Settings(**values)


_cache: dict[tuple, Settings] = {}


def settings(env: Mapping[str, str] | None = None) -> Settings:
    """The parsed settings of `env` (default: this process's environment)."""
    env = os.environ if env is None else env
    key = tuple(sorted((k, v) for k, v in env.items() if k.startswith("BITNET_")))
    s = _cache.get(key)
    if s is None:
        s = parse_env(env)
        if len(_cache) > 64:
            _cache.clear()
        _cache[key] = s
    return s
