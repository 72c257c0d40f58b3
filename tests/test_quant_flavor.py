"""Flavor detection and the strict loader (AC1, AC2)."""

from __future__ import annotations

import logging
import re
import warnings

import numpy as np
import pytest

from bitnet.errors import FormatError, StrictModeError
from bitnet.gguf import GGUFReader, GGUFWriter
from bitnet.quant import i2s, rust_port
from bitnet.quant.flavor import SIZE_TOLERANCE, FlavorWarning, detect_flavor
from bitnet.quant.weights import load_weight

OUT, K = 2560, 2560  # big enough that 0.1% is more than the 32-byte alignment


def write(path, data: np.ndarray, shape=(K, OUT), type_id=36, extra_meta=()):
    w = GGUFWriter(path)
    for k, v in extra_meta:
        w.add(k, v)
    w.add_tensor("w", data, shape=shape, gtype=type_id, nbytes=data.nbytes)
    w.write()
    return path


@pytest.fixture(scope="module")
def ternary():
    return np.random.default_rng(0).integers(-1, 2, (OUT, K)).astype(np.int8)


def decide(path, strict=False):
    with GGUFReader(path) as r:
        t = r.tensor("w")
        span = np.frombuffer(r._buf, np.uint8, t.span, t.data_offset)
        return detect_flavor(t, alignment=r.alignment, raw=span, strict=strict)


@pytest.mark.ac1
def test_microsoft_i2s_is_never_taken_for_qk256(tmp_path, ternary):
    """n/4 + 32 bytes with a plausible scale is I2_S, although QK256 (n/4 bytes) is within 0.1%."""
    d = decide(write(tmp_path / "a.gguf", i2s.pack(ternary, 0.25)))
    assert d.flavor == "i2_s" and d.exact
    assert abs(d.span - (OUT * K // 4)) / (OUT * K // 4) < SIZE_TOLERANCE  # the trap exists
    q = decide(write(tmp_path / "b.gguf", rust_port.pack_qk256(ternary), extra_meta=[("bitnet_harness.qk256_lut", [-1, 0, 1, 0])]))
    assert q.flavor == "qk256" and q.exact
    b = decide(write(tmp_path / "c.gguf", rust_port.pack_bitnet32(ternary, 0.25)))
    assert b.flavor == "bitnet32" and b.exact


@pytest.mark.ac1
def test_i2s_size_with_a_corrupt_scale_is_an_error_not_qk256(tmp_path, ternary):
    raw = i2s.pack(ternary, 0.25)
    raw[OUT * K // 4: OUT * K // 4 + 4] = np.array([np.nan], "<f4").view(np.uint8)
    with pytest.raises(FormatError, match="not a positive finite f32: corrupt tensor"):
        decide(write(tmp_path / "a.gguf", raw))


@pytest.mark.ac1
@pytest.mark.ac2
def test_within_tolerance_permissive_warns_once_strict_refuses(tmp_path, ternary, caplog):
    raw = np.concatenate([rust_port.pack_bitnet32(ternary, 0.25), np.zeros(64, np.uint8)])  # +0.003%
    p = write(tmp_path / "a.gguf", raw)
    with warnings.catch_warnings(record=True) as rec, caplog.at_level(logging.INFO, logger="bitnet.flavor"):
        warnings.simplefilter("always")
        with GGUFReader(p) as r:
            w = load_weight(r, "w", strict=False)
    assert w.flavor == "bitnet32" and not w.decision.exact
    assert len([x for x in rec if issubclass(x.category, FlavorWarning)]) == 1
    (line,) = [m for m in caplog.messages if m.startswith("flavor ")]
    assert re.fullmatch(r"flavor tensor=w type=36 shape=2560x2560 bytes=2048064 -> bitnet32 expected=2048000 "
                        r"\(within-tolerance dev=\+0\.0031%\)", line), line
    with GGUFReader(p) as r, pytest.raises(StrictModeError) as ei:
        load_weight(r, "w", strict=True)
    msg = str(ei.value)
    for fact in ("'w'", "expected 2048000 bytes", "found 2048064", "+0.0031%"):
        assert fact in msg


@pytest.mark.ac1
def test_i2s_plus_padding_is_ambiguous_with_qk256_and_says_why(tmp_path, ternary):
    """64 stray bytes put an I2_S tensor within 0.1% of both I2_S and QK256: refused, with the
    byte accounting of every candidate, instead of a guess that may drop the scale."""
    p = write(tmp_path / "a.gguf", np.concatenate([i2s.pack(ternary, 0.25), np.zeros(64, np.uint8)]))
    with pytest.raises(FormatError) as ei:
        decide(p)
    msg = str(ei.value)
    assert "ambiguous within the 0.1% tolerance" in msg
    assert "i2_s: 1638432 bytes (dev +0.0039%)" in msg and "qk256: 1638400 bytes (dev +0.0059%)" in msg


@pytest.mark.ac1
def test_strict_mode_from_environment(tmp_path, ternary, monkeypatch):
    p = write(tmp_path / "a.gguf", np.concatenate([rust_port.pack_bitnet32(ternary, 0.25), np.zeros(64, np.uint8)]))
    monkeypatch.setenv("BITNET_STRICT_MODE", "1")
    with GGUFReader(p) as r, pytest.raises(StrictModeError):
        load_weight(r, "w")


@pytest.mark.ac2
def test_exact_decisions_log_one_standard_line_and_no_warning(tmp_path, ternary, caplog):
    p = write(tmp_path / "a.gguf", i2s.pack(ternary, 0.25))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.INFO, logger="bitnet.flavor"), GGUFReader(p) as r:
            load_weight(r, "w")
    assert [m for m in caplog.messages if m.startswith("flavor ")] == [
        "flavor tensor=w type=36 shape=2560x2560 bytes=1638432 -> i2_s expected=1638432 (exact)"]


@pytest.mark.ac1
def test_no_match_lists_the_byte_accounting(tmp_path, ternary):
    raw = i2s.pack(ternary, 0.25)[:-4096]
    with pytest.raises(FormatError) as ei:
        decide(write(tmp_path / "a.gguf", raw))
    msg = str(ei.value)
    assert "matches no flavor" in msg and "i2_s: 1638432 bytes" in msg and "qk256: 1638400 bytes" in msg


@pytest.mark.ac1
def test_coinciding_sizes_are_resolved_by_content_or_refused(tmp_path):
    """n = 512: I2_S and BitNet32-F16 both take 160 bytes."""
    t = np.random.default_rng(1).integers(-1, 2, (4, 128)).astype(np.int8)
    d = decide(write(tmp_path / "a.gguf", i2s.pack(t, 0.5), shape=(128, 4)))
    assert d.flavor == "i2_s" and "coincide" in d.note
    junk = np.full(160, 0xFF, np.uint8)  # code 3 everywhere, NaN scales: neither decodes
    with pytest.raises(FormatError, match="ambiguous"):
        decide(write(tmp_path / "b.gguf", junk, shape=(128, 4)))


@pytest.mark.ac11
@pytest.mark.parametrize("type_id,name", [(38, "TL1"), (39, "TL2")])
def test_tl1_tl2_without_a_kernel_config_are_refused_naming_shape_and_places(tmp_path, monkeypatch, type_id, name):
    from bitnet.gguf.constants import ggml_type
    from bitnet.quant.tl_config import (
        ENV_CPP_DIR,
        ENV_KERNEL_CONFIG,
        KEY_KERNEL_CONFIG,
        KernelConfigError,
    )

    monkeypatch.delenv(ENV_KERNEL_CONFIG, raising=False)
    monkeypatch.setenv(ENV_CPP_DIR, str(tmp_path / "no-checkout"))
    shape = (3200, 256) if name == "TL2" else (256, 256)
    n = ggml_type(name).nbytes(shape)
    raw = np.zeros(n, np.uint8)
    raw[n - 32: n - 28] = np.array([1.0], "<f4").view(np.uint8)
    p = write(tmp_path / "t.gguf", raw, shape=shape, type_id=type_id)
    with GGUFReader(p) as r:
        assert r.tensor("w").type_name == name
        with pytest.raises(KernelConfigError) as e:
            load_weight(r, "w")
    msg = str(e.value)
    assert f"w is {name} with M={shape[1]} rows, K={shape[0]} columns" in msg
    assert f"metadata key {KEY_KERNEL_CONFIG} (absent)" in msg
    assert f"${ENV_KERNEL_CONFIG} (unset)" in msg
    assert f"${ENV_CPP_DIR} -> {tmp_path / 'no-checkout' / 'include' / 'kernel_config.ini'} (no such file)" in msg


@pytest.mark.ac1
def test_qk256_without_its_table_is_refused(tmp_path, ternary):
    p = write(tmp_path / "q.gguf", rust_port.pack_qk256(ternary))
    with GGUFReader(p) as r, pytest.raises(FormatError, match="does not say which code table"):
        load_weight(r, "w", strict=False)


@pytest.mark.ac1
def test_inspect_shows_flavor_and_strict_loader_rejects(tmp_path, ternary):
    import io
    import json

    from bitnet.cli import IO, main

    p = write(tmp_path / "a.gguf", np.concatenate([rust_port.pack_bitnet32(ternary, 0.25), np.zeros(64, np.uint8)]))
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["inspect", str(p), "--json"], IO(out, err)) == 0
    t = json.loads(out.getvalue())["tensors"][0]
    assert t["flavor"] == "bitnet32" and t["flavor_exact"] is False
    out, err = io.StringIO(), io.StringIO()
    assert main(["inspect", str(p), "--strict-loader"], IO(out, err)) == 2
    assert "strict mode refuses a within-tolerance match" in err.getvalue()
