"""`BITNET_WEIGHTS=mmap|memory` (`--weights`): where the model file's bytes live.

`memory` reads the file once into private anonymous memory (huge pages where the kernel offers
them) instead of mapping it; everything downstream must see the same bytes, compute the same
logits, raise the same typed errors on a broken file, and a run that would not fit is refused
before anything is allocated. Receipts of `bitnet benchmark` record the residency (schema 1.3)
and `--rerun` passes it back. No timing is asserted here: the speed figures are in
docs/explanation/performance.md.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from bitnet.cli import IO
from bitnet.errors import ConfigError, GGUFError
from bitnet.gguf import reader as reader_mod
from bitnet.gguf.reader import GGUFReader
from tests._cli import run_cli as run

RESIDENCIES = ("mmap", "memory")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from bitnet.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("resid") / "m.gguf", fmt="i2_s", seed=5)


@pytest.mark.ac27
def test_memory_gives_the_same_bytes_fields_and_readonly_views(tiny):
    with GGUFReader(tiny) as a, GGUFReader(tiny, residency="memory") as b:
        assert (a.residency, b.residency) == ("mmap", "memory")
        assert [t.name for t in a.tensors] == [t.name for t in b.tensors] and a.tensors
        for t in a.tensors:
            ra, rb = a.raw(t.name), b.raw(t.name)
            assert ra.tobytes() == rb.tobytes()
            assert not rb.flags.writeable  # as read-only as the file's map
        assert a.metadata.keys() == b.metadata.keys()
        want_tokens = list(a.get("tokenizer.ggml.tokens"))
        toks = b.get("tokenizer.ggml.tokens")
        first = a.tensors[0].name
        want, kept = a.raw(first).tobytes(), b.raw(first)
    # views and string arrays handed out keep the memory alive after close(), as with the map
    assert kept.tobytes() == want and list(toks) == want_tokens


@pytest.mark.ac27
@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_memory_gives_identical_logits_and_records_the_residency(tiny, monkeypatch, backend, restore_backend):
    from bitnet.engine import Engine
    from bitnet.kernels import dispatch

    if backend == "native":
        from bitnet.kernels.native import native_status

        ok, why = native_status()
        if not ok:
            pytest.skip(f"native kernels unavailable: {why}")
    dispatch.set_backend(backend)
    ids = [1, 5, 9, 13]
    a = Engine(tiny, weights="mmap")
    b = Engine(tiny, weights="memory")
    assert (a.model.weights, b.model.weights) == ("mmap", "memory")
    assert a.model.reader.residency == "mmap" and b.model.reader.residency == "memory"
    assert np.array_equal(a.logits(ids), b.logits(ids))
    monkeypatch.setenv("BITNET_WEIGHTS", "memory")
    assert Engine(tiny).model.weights == "memory"  # None -> settings().weights
    monkeypatch.setenv("BITNET_WEIGHTS", "mmap")
    assert Engine(tiny).model.weights == "mmap"


@pytest.mark.ac27
def test_bad_setting_and_unknown_residency_are_config_errors(tiny, monkeypatch):
    from bitnet.engine import Engine
    from bitnet.settings import settings

    monkeypatch.setenv("BITNET_WEIGHTS", "ram")
    with pytest.raises(ConfigError, match=r"BITNET_WEIGHTS='ram': expected one of mmap, memory"):
        settings()
    with pytest.raises(ConfigError, match="BITNET_WEIGHTS"):
        Engine(tiny)
    rc, _, err = run("run", "--model", str(tiny), "--max-tokens", "1", "--backend", "numpy")
    assert rc == 2 and "BITNET_WEIGHTS" in err and len(err.strip().splitlines()) == 1
    monkeypatch.delenv("BITNET_WEIGHTS")
    with pytest.raises(ConfigError, match="residency 'disk'"):
        GGUFReader(tiny, residency="disk")


@pytest.mark.ac27
def test_memory_is_refused_when_memavailable_is_short(tiny, monkeypatch):
    from bitnet.engine import Engine

    size = os.path.getsize(tiny)
    monkeypatch.setattr(reader_mod, "mem_available", lambda: 4096)
    with pytest.raises(ConfigError) as ei:
        GGUFReader(tiny, residency="memory")
    msg = str(ei.value)
    assert str(tiny) in msg and f"needs {size} bytes" in msg and "MemAvailable is 4096 bytes" in msg
    assert "BITNET_WEIGHTS=mmap" in msg and "needs none" in msg
    with pytest.raises(ConfigError, match="MemAvailable"):
        Engine(tiny, weights="memory")
    GGUFReader(tiny).close()  # the map needs no memory check
    monkeypatch.setattr(reader_mod, "mem_available", lambda: None)  # not Linux: nothing to check
    GGUFReader(tiny, residency="memory").close()
    monkeypatch.setattr(reader_mod, "mem_available", lambda: 4096)
    rc, _, err = run("run", "--model", str(tiny), "--max-tokens", "1", "--backend", "numpy", "--weights", "memory")
    assert rc == 2 and "MemAvailable" in err and len(err.strip().splitlines()) == 1


@pytest.mark.ac27
def test_numpy_cache_reads_memavailable_from_the_neutral_module():
    from bitnet import meminfo
    from bitnet.kernels import numpy_cache

    assert numpy_cache.mem_available is meminfo.mem_available is reader_mod.mem_available


@pytest.mark.ac25
@pytest.mark.parametrize("residency", RESIDENCIES)
@pytest.mark.parametrize("cut,match", [(3, "truncated magic|empty"), (20, "truncated"), (None, "past the end of the file")])
def test_broken_files_raise_the_same_typed_errors(tiny, tmp_path, residency, cut, match):
    data = tiny.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[: cut if cut is not None else len(data) // 2])
    with pytest.raises(GGUFError, match=match) as ei:
        GGUFReader(bad, residency=residency)
    assert str(bad) in str(ei.value)
    with pytest.raises(GGUFError) as mm:
        GGUFReader(bad)
    assert str(ei.value) == str(mm.value)  # the same error, word for word, in both residencies
    bad.write_bytes(b"GGUX" + data[4:1024])
    with pytest.raises(GGUFError, match="bad magic"):
        GGUFReader(bad, residency=residency)


@pytest.mark.ac25
def test_short_read_and_read_error_name_file_and_offset(tiny, monkeypatch):
    size = os.path.getsize(tiny)
    monkeypatch.setattr(reader_mod, "READ_CHUNK", 4096)
    real = os.preadv

    def short(fd, bufs, off):  # the file shrank after fstat: the second read returns nothing
        return 0 if off else real(fd, bufs, off)

    monkeypatch.setattr(reader_mod.os, "preadv", short)
    with pytest.raises(GGUFError, match=f"short read: the file ended after 4096 of the {size} bytes") as ei:
        GGUFReader(tiny, residency="memory")
    assert str(tiny) in str(ei.value) and "offset 4096" in str(ei.value)

    def failing(fd, bufs, off):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(reader_mod.os, "preadv", failing)
    with pytest.raises(GGUFError, match="offset 0: read failed: Input/output error"):
        GGUFReader(tiny, residency="memory")


@pytest.mark.ac26
def test_run_with_weights_memory(tiny, restore_backend):
    rc, out, err = run("run", "--model", str(tiny), "--max-tokens", "3", "--greedy", "--backend", "numpy", "--json",
                       "--weights", "memory")
    assert rc == 0, err
    rc2, out2, _ = run("run", "--model", str(tiny), "--max-tokens", "3", "--greedy", "--backend", "numpy", "--json",
                       "--weights", "mmap")
    assert rc2 == 0 and json.loads(out)["ids"] == json.loads(out2)["ids"]
    rc, _, err = run("run", "--model", str(tiny), "--weights", "disk")
    assert rc == 2 and "--weights" in err


@pytest.fixture
def restore_backend():
    from bitnet.kernels import dispatch

    yield
    dispatch.set_backend("numpy")


@pytest.mark.ac14
@pytest.mark.ac24
def test_benchmark_records_weights_and_the_receipt_verifies(tiny, tmp_path, restore_backend):
    from bitnet.receipts.rerun import rerun_argv
    from bitnet.receipts.verify import verify_receipt

    out = tmp_path / "r.json"
    rc, _, err = run("benchmark", "--model", str(tiny), "--tokens", "3", "--deterministic", "--backend", "numpy",
                     "--weights", "memory", "--quiet", "--out", str(out))
    assert rc == 0, err
    r = json.loads(out.read_text())
    assert r["weights"] == "memory" and r["schema_version"] == "1.3.0"
    assert verify_receipt(r, model=tiny).passed
    rc, vout = run_verify(out, "--model", tiny)
    assert rc == 0, vout
    argv = rerun_argv(r, tiny, "x")
    assert argv[argv.index("--weights") + 1] == "memory"
    # a receipt from before 1.3 carries no `weights`: it still verifies, and re-runs from the map
    old = {k: v for k, v in r.items() if k != "weights"} | {"schema_version": "1.2.0"}
    assert verify_receipt(old, model=tiny).passed
    argv = rerun_argv(old, tiny, "x")
    assert argv[argv.index("--weights") + 1] == "mmap"
    # only the two residencies are valid values
    assert not verify_receipt(r | {"weights": "disk"}, model=tiny).passed


def run_verify(*argv):
    from bitnet.cli.verify_receipt import main as verify_main

    out, err = io.StringIO(), io.StringIO()
    return verify_main(list(map(str, argv)), IO(out, err)), out.getvalue()


@pytest.mark.ac14
def test_committed_pre_1_3_receipt_still_verifies(receipt_base_model):
    from bitnet.receipts.verify import verify_receipt

    root = Path(__file__).resolve().parents[1]
    base = json.loads((root / "fixtures" / "receipts" / "good" / "base.json").read_text())
    assert "weights" not in base and base["schema_version"] < "1.3.0"
    assert verify_receipt(base, model=receipt_base_model).passed


@pytest.mark.ac35
def test_weights_is_refused_with_another_engine(tiny):
    rc, _, err = run("benchmark", "--model", str(tiny), "--engine", "cmd:true", "--weights", "memory")
    assert rc == 2 and "--weights" in err and len(err.strip().splitlines()) == 1
