"""The installed wheel works like the checkout (AC26).

Builds an sdist from the repository's files, a wheel from that sdist (so both carry what the
installed package needs), installs the wheel into a fresh venv outside the checkout and runs
there what a new user runs: `bitnet run`, `bitnet benchmark --out`, `bitnet-verify-receipt`, and
the user's own pytest file with an AC marker. Then it deletes the venv's native C source (a
native build that is impossible) and checks that `cpu` falls back to NumPy with one stderr line
and that strict mode refuses.

No network: the venv sees this interpreter's site-packages (`--system-site-packages`) for the
dependencies, and the build runs without isolation (setuptools is already installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from bitnet.kernels.native import (
    native_status,  # at import: pytester runs elsewhere drop in-test imports
)

pytestmark = pytest.mark.ac26
ROOT = Path(__file__).resolve().parents[1]

#: what the installed package reads from its own folder at run time
NEEDED_IN_WHEEL = ("bitnet/kernels/native/kernels.c", "bitnet/kernels/cuda/kernels.cu", "crossval/shim.c",
                   "bitnet/_resources/policies/acceptance.yml",
                   "bitnet/_resources/policies/receipt-policy.yml",
                   "bitnet/_resources/policies/parity.yml",
                   "bitnet/_resources/schemas/inference-receipt.schema.json",
                   "bitnet/_resources/schemas/parity-receipt.schema.json",
                   "bitnet/_resources/fixtures/models.yml", "bitnet/_resources/fixtures/prompts.yml",
                   "bitnet/_resources/fixtures/receipts/good/base.json")


def _source_files() -> list[str]:
    """The checkout's files as a fresh clone (plus uncommitted work) would have them."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell source files from build output")
    return [f for f in out.decode().split("\0") if f and (ROOT / f).is_file()]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
           and not k.startswith("PYTEST_")}
    env.update(extra)
    return env


def _run(argv, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env or _clean_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(sdist, wheel): the sdist from the source files, the wheel from the unpacked sdist."""
    pytest.importorskip("setuptools", minversion="70.1")
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    for f in _source_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    dist = tmp / "dist"
    dist.mkdir()
    code = ("import sys; from setuptools import build_meta as b; "
            "print(getattr(b, sys.argv[1])(sys.argv[2]))")
    r = _run([sys.executable, "-c", code, "build_sdist", dist], cwd=src)
    assert r.returncode == 0, r.stderr[-3000:]
    sdist = dist / r.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as t:
        t.extractall(tmp / "unpacked", filter="data")
    (unpacked,) = (tmp / "unpacked").iterdir()
    r = _run([sys.executable, "-c", code, "build_wheel", dist], cwd=unpacked)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = dist / r.stdout.strip().splitlines()[-1]
    return sdist, wheel


@pytest.fixture(scope="module")
def venv(built, tmp_path_factory):
    """A fresh venv outside the checkout with the wheel installed (deps from this interpreter)."""
    _, wheel = built
    root = tmp_path_factory.mktemp("venv")
    env = root / "env"
    r = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", env], cwd=root)
    assert r.returncode == 0, r.stderr
    py = env / "bin" / "python"
    r = _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    user = root / "user-repo"
    user.mkdir()
    return env, user


def test_sdist_and_wheel_carry_what_the_package_reads(built):
    sdist, wheel = built
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in NEEDED_IN_WHEEL if n not in names]
    assert not missing, f"{wheel.name} lacks {missing}"
    with tarfile.open(sdist) as t:
        snames = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for n in ("bitnet/kernels/native/kernels.c", "bitnet/kernels/cuda/kernels.cu", "crossval/shim.c",
              "policies/acceptance.yml", "schemas/inference-receipt.schema.json", "setup.py"):
        assert n in snames, f"{sdist.name} lacks {n}"


def test_installed_package_is_the_wheel_not_the_checkout(venv):
    env, user = venv
    r = _run([env / "bin" / "python", "-c", "import bitnet, crossval; print(bitnet.__file__); print(crossval.__file__)"],
             cwd=user)
    assert r.returncode == 0, r.stderr
    for line in r.stdout.split():
        assert Path(line).resolve().is_relative_to(env.resolve()), line


def test_run_benchmark_verify_in_the_venv(venv):
    env, user = venv
    bin_ = env / "bin"
    r = _run([bin_ / "bitnet", "run", "--max-tokens", "4", "--greedy"], cwd=user)
    assert r.returncode == 0, r.stderr[-3000:]
    if native_status()[0]:  # the checkout builds its kernels here, so the installed wheel must too
        assert "using numpy" not in r.stderr, r.stderr
    receipt = user / "out" / "inference.json"
    r = _run([bin_ / "bitnet", "benchmark", "--tokens", "4", "--deterministic", "--out", receipt], cwd=user)
    assert r.returncode == 0, r.stderr[-3000:]
    assert receipt.is_file()
    r = _run([bin_ / "bitnet-verify-receipt", receipt], cwd=user)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_users_pytest_file_gets_the_packaged_ac_catalog(venv):
    env, user = venv
    (user / "test_mine.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.ac3\n"
        "def test_cache_guard(bitnet_tiny_model):\n"
        "    assert bitnet_tiny_model.is_file()\n\n"
        "def test_shared_fixtures(bitnet_fixtures_dir, bitnet_recipe_model):\n"
        "    assert '_resources' in str(bitnet_fixtures_dir)\n"
        "    assert (bitnet_fixtures_dir / 'receipts' / 'good' / 'base.json').is_file()\n"
        "    assert bitnet_recipe_model('default-i2s').is_file()\n")
    r = _run([env / "bin" / "python", "-m", "pytest", "-p", "no:cacheprovider", "--strict-markers",
              "--ac-report", "test_mine.py"], cwd=user)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "2 passed" in r.stdout, r.stdout[-2000:]
    ac3 = [ln for ln in r.stdout.splitlines() if ln.startswith("ac3 ")]
    assert ac3 and ac3[0].split()[1:4] == ["1", "0", "1"], r.stdout[-3000:]  # selected, deselected, passed


def test_cpu_falls_back_when_native_cannot_build_and_strict_refuses(venv):
    """The issue's failure: a wheel without its C source. Now `cpu` falls back with one stderr
    line, and strict mode refuses instead."""
    env, user = venv
    r = _run([env / "bin" / "python", "-c", "import bitnet.kernels.native as n; print(n.SOURCE)"], cwd=user)
    src = Path(r.stdout.strip())
    assert src.is_file() and src.resolve().is_relative_to(env.resolve())
    src.unlink()
    r = _run([env / "bin" / "bitnet", "run", "--max-tokens", "2", "--greedy"], cwd=user)
    assert r.returncode == 0, r.stderr[-3000:]
    notes = [ln for ln in r.stderr.splitlines() if "using numpy" in ln]
    assert len(notes) == 1 and "kernels.c" in notes[0], r.stderr
    r = _run([env / "bin" / "bitnet", "run", "--max-tokens", "2", "--strict"], cwd=user)
    assert r.returncode == 2 and "strict mode refuses" in r.stderr, r.stderr
