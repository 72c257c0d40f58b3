"""One settings module parses every BITNET_* variable (AC27): bad values are errors naming the
variable and what it allows; the CLI and library use agree."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from bitnet.errors import ConfigError
from bitnet.settings import VARS, parse_bool, parse_env, settings

pytestmark = pytest.mark.ac27
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("v,expected", [("1", True), ("TRUE", True), (" yes ", True), ("on", True),
                                        ("0", False), ("false", False), ("No", False), ("off", False)])
def test_one_truthy_parser(v, expected):
    assert parse_bool("BITNET_X", v) is expected


@pytest.mark.parametrize("name,value,allowed", [
    ("BITNET_STRICT_MODE", "2", "1, true, yes, on"),
    ("BITNET_DETERMINISTIC", "maybe", "0, false, no, off"),
    ("BITNET_BACKEND", "gpu", "cpu, numpy, native, cuda"),
    ("BITNET_THREADS", "0", ">= 1"),
    ("BITNET_THREADS", "four", "integer"),
    ("BITNET_SEED", "x", "integer"),
    ("BITNET_NATIVE", "disabled", "0, false, no, off"),
])
def test_bad_value_names_variable_and_allowed_values(name, value, allowed):
    with pytest.raises(ConfigError) as e:
        parse_env({name: value})
    assert name in str(e.value) and repr(value) in str(e.value) and allowed in str(e.value)


def test_defaults_and_values():
    s = parse_env({})
    assert (s.strict, s.backend, s.threads, s.native) == (False, None, None, True)
    s = parse_env({"BITNET_STRICT_MODE": "on", "BITNET_BACKEND": "CPU", "BITNET_THREADS": "3",
                   "BITNET_SEED": "7", "BITNET_NATIVE": "0", "BITNET_CACHE_DIR": "/tmp/x",
                   "BITNET_GGUF": ""})
    assert (s.strict, s.backend, s.threads, s.seed, s.native) == (True, "cpu", 3, 7, False)
    assert s.cache_dir == Path("/tmp/x") and s.gguf is None  # empty = unset


def test_parsed_once_per_environment(monkeypatch):
    monkeypatch.setenv("BITNET_SEED", "5")
    a = settings()
    assert settings() is a and a.seed == 5
    monkeypatch.setenv("BITNET_SEED", "6")
    assert settings().seed == 6


def test_strict_mode_2_is_an_error_everywhere(monkeypatch):
    from bitnet.cli import IO, main
    from bitnet.errors import strict_enabled

    monkeypatch.setenv("BITNET_STRICT_MODE", "2")
    with pytest.raises(ConfigError, match="BITNET_STRICT_MODE"):
        strict_enabled()
    out, err = io.StringIO(), io.StringIO()
    assert main(["run", "--max-tokens", "1", "--backend", "numpy"], IO(out, err)) == 2
    assert "BITNET_STRICT_MODE='2'" in err.getvalue()


def test_backend_cpu_in_library_use(monkeypatch):
    """BITNET_BACKEND=cpu means the same in library use as in the CLI: native when it builds
    here, else numpy with one stderr line (no more "unknown backend 'cpu'")."""
    from bitnet.kernels import dispatch
    from bitnet.kernels.native import native_status

    monkeypatch.setenv("BITNET_BACKEND", "cpu")
    monkeypatch.delattr(dispatch._state, "backend", raising=False)
    try:
        got = dispatch.get_backend()
        assert got == ("native" if native_status()[0] else "numpy")
    finally:
        dispatch.set_backend("numpy")


def test_cpu_falls_back_with_one_line_and_strict_refuses(monkeypatch, capsys):
    """A native build that is impossible (here: BITNET_NATIVE=0, as if no compiler) gives numpy
    and one stderr line; strict mode refuses."""
    from bitnet.errors import StrictModeError
    from bitnet.kernels import dispatch, native

    monkeypatch.setenv("BITNET_NATIVE", "0")
    native._module.cache_clear()
    try:
        assert dispatch.activate("cpu", who="lib") == "numpy"
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "BITNET_NATIVE" in err and "using numpy" in err
        with pytest.raises(StrictModeError, match="strict mode refuses"):
            dispatch.activate("cpu", strict=True)
    finally:
        monkeypatch.delenv("BITNET_NATIVE")
        native._module.cache_clear()
        dispatch.set_backend("numpy")


def test_no_other_module_reads_bitnet_variables():
    """Every BITNET_* read goes through bitnet.settings: no os.environ.get("BITNET_...") or
    os.environ["BITNET_..."] reads elsewhere in the packages (writes, e.g. --bitnet-strict
    setting the variable for the run, are allowed)."""
    read = re.compile(r"""(os\.environ\.get|os\.getenv)\(\s*["']BITNET_|os\.environ\[["']BITNET_[A-Z_]+["']\](?!\s*=)""")
    offenders = []
    for pkg in ("bitnet", "crossval"):
        for f in (ROOT / pkg).rglob("*.py"):
            if f.name == "settings.py":
                continue
            for i, line in enumerate(f.read_text().splitlines(), 1):
                if read.search(line):
                    offenders.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_every_variable_is_documented():
    doc = (ROOT / "docs" / "reference" / "settings.md").read_text()
    missing = [v.name for v in VARS.values() if f"`{v.name}`" not in doc]
    assert not missing, f"docs/reference/settings.md lacks {missing}"
