"""TL1/TL2: kernel configs as data, codecs (hand-derived vectors, round trips, Hypothesis), loading.

The hand-derived vectors follow the converter's reshape/transpose rules
(microsoft/BitNet 16da220 `utils/convert-hf-to-gguf-bitnet.py`) worked out by hand for one
32-row tile; byte-exactness against the converter itself was checked outside the suite.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.errors import FormatError
from bitnet.gguf.constants import ggml_type
from bitnet.gguf.reader import GGUFReader
from bitnet.gguf.writer import GGUFWriter
from bitnet.quant.tl import decode_tl1, decode_tl2, default_tile, encode_tl1, encode_tl2
from bitnet.quant.tl_config import (
    ENV_CPP_DIR,
    ENV_KERNEL_CONFIG,
    KEY_KERNEL_CONFIG,
    KernelConfigError,
    TileConfig,
    load_ini,
    parse_ini,
    tile_for,
)
from bitnet.quant.weights import load_weight

# bitnet.cpp preset_kernels/bitnet_b1_58-3B/kernel_config_tl2.ini as codegen_tl2.py writes it
INI_3B = """[Kernels_0]
m = 3200
k = 8640
bm = 160
bk = 96
bmm = 32

[Kernels_1]
m = 3200
k = 3200
bm = 320
bk = 96
bmm = 32

[Kernels_2]
m = 8640
k = 3200
bm = 320
bk = 96
bmm = 32
"""

pytestmark = pytest.mark.ac11


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV_KERNEL_CONFIG, raising=False)
    monkeypatch.delenv(ENV_CPP_DIR, raising=False)


def ternary(m, k, seed=0):
    return np.random.default_rng(seed).integers(-1, 2, (m, k)).astype(np.int8)


# -- kernel_config.ini ------------------------------------------------------------------------------
def test_ini_keys_map_bm_to_the_row_tile_and_bmm_to_the_simd_block():
    cfg = parse_ini(INI_3B, "x.ini")
    assert cfg.find(3200, 8640) == TileConfig(m=3200, k=8640, BM=160, BK=96, bm=32)
    assert cfg.find(8640, 3200).BM == 320 and cfg.find(1, 2) is None
    assert parse_ini(cfg.to_ini(), "again").tiles == cfg.tiles


def test_codegen_upper_case_keys_read_the_same():
    text = "[Kernels_0]\nM = 256\nK = 256\nBM = 128\nBK = 96\nbmm = 32\n"
    assert parse_ini(text, "u").find(256, 256) == TileConfig(256, 256, 128, 96, 32)


@pytest.mark.parametrize("text,match", [
    ("", "no \\[Kernels_N\\] sections"),
    ("[Kernels_0]\nm = 1\nk = 2\nbm = 3\nbk = 4\n", "\\[Kernels_0\\] has no `bmm`"),
    ("[Kernels_0]\nm = 1\nk = x\nbm = 3\nbk = 4\nbmm = 32\n", "k = 'x' is not an integer"),
    ("m = 1\n", "not a kernel_config.ini"),
])
def test_malformed_ini_is_a_typed_error(text, match):
    with pytest.raises(KernelConfigError, match=match):
        parse_ini(text, "bad.ini")


@pytest.mark.parametrize("flavor,tile,match", [
    ("tl2", TileConfig(256, 256, 128, 96, 64), "allows 32 only"),
    ("tl2", TileConfig(256, 256, 100, 96, 32), "M % BM"),
    ("tl2", TileConfig(256, 256, 128, 100, 32), "multiple of 24"),
    ("tl2", TileConfig(256, 768, 128, 240, 32), "\\(K % BK\\) % 32"),
    ("tl2", TileConfig(256, 192, 128, 96, 32), "K >= 256"),
    ("tl1", TileConfig(256, 256, 128, 64, 16), "32 or 64"),
    ("tl1", TileConfig(256, 250, 128, 64, 32), "K % BK"),
])
def test_unusable_tiles_are_refused_with_the_rule(flavor, tile, match):
    with pytest.raises(KernelConfigError, match=match):
        tile.check(flavor)


class _Meta:
    path = "m.gguf"

    def __init__(self, meta):
        self.meta = meta

    def get(self, key, default=None):
        return self.meta.get(key, default)


def test_config_sources_in_order(tmp_path):
    ini = tmp_path / "kernel_config.ini"
    ini.write_text(INI_3B)
    checkout = tmp_path / "BitNet"
    (checkout / "include").mkdir(parents=True)
    (checkout / "include" / "kernel_config.ini").write_text(INI_3B.replace("bm = 160", "bm = 320"))
    own = "[Kernels_0]\nm = 3200\nk = 8640\nbm = 64\nbk = 96\nbmm = 32\n"
    # the file's own key wins over the environment
    assert tile_for(_Meta({KEY_KERNEL_CONFIG: own}), "w", 3200, 8640, "tl2", env={ENV_KERNEL_CONFIG: str(ini)}).BM == 64
    # a user path: the ini file, or a checkout directory
    assert tile_for(_Meta({}), "w", 3200, 8640, "tl2", env={ENV_KERNEL_CONFIG: str(ini)}).BM == 160
    assert tile_for(_Meta({}), "w", 3200, 8640, "tl2", env={ENV_KERNEL_CONFIG: str(checkout)}).BM == 320
    assert tile_for(_Meta({}), "w", 3200, 8640, "tl2", env={ENV_CPP_DIR: str(checkout)}).BM == 320
    assert load_ini(checkout).source.endswith("include/kernel_config.ini")
    # a source without the shape is passed over, and named in the error
    with pytest.raises(KernelConfigError) as e:
        tile_for(_Meta({KEY_KERNEL_CONFIG: own}), "blk.0.ffn_up.weight", 512, 256, "tl2",
                 env={ENV_KERNEL_CONFIG: str(ini)})
    msg = str(e.value)
    assert "blk.0.ffn_up.weight is TL2 with M=512 rows, K=256 columns (ggml shape [256, 512])" in msg
    assert f"metadata key {KEY_KERNEL_CONFIG} (sections for 3200x8640)" in msg
    assert f"${ENV_KERNEL_CONFIG} -> {ini} (sections for 3200x8640, 3200x3200, 8640x3200)" in msg
    assert f"${ENV_CPP_DIR} (unset)" in msg


# -- hand-derived layouts (one 32-row tile) ---------------------------------------------------------
def _swap(r):
    return np.array([0, 2, 1, 3])[r // 8] * 8 + r % 8


def test_tl1_hand_derived_layout():
    """M = BM = bm = 32, K = BK = by = 8: pair p of row r is byte 32*(r//16) + 16*(p//2) + r%16,
    high nibble for even p; the code is 3a + b + 4; the scale follows at byte M*K/4."""
    t = ternary(32, 8, 1)
    tile = TileConfig(32, 8, 32, 8, 32)
    got = encode_tl1(t, 0.5, tile)
    r, p = np.meshgrid(np.arange(32), np.arange(4), indexing="ij")
    code = 3 * t[:, 0::2] + t[:, 1::2] + 4
    byte = 32 * (r // 16) + 16 * (p // 2) + r % 16
    want = np.zeros(64, np.int64)
    np.add.at(want, byte, code.astype(np.int64) << np.where(p % 2 == 0, 4, 0))
    assert np.array_equal(got[:64], want.astype(np.uint8))
    assert got.size == ggml_type("TL1").nbytes((8, 32)) and got[64:68].view("<f4")[0] == 0.5 and not got[68:].any()


def test_tl2_hand_derived_layout():
    """M = BM = bm = 32, K = 256, BK = 192: K3 = 192 (64 triples g), K2 = 64 (32 pairs p).
    Triple g of row r: index |9a+3b+c| in byte 32*(g//2) + swap(r), high nibble for even g;
    sign (v < 0) in uint16 word 16*(g//8) + r%16 at bit 15 - (2*(g%8) + r//16). Pair p:
    code 3a+b+4 in byte 256*(p//16) + 32*(p%16//2) + swap(r), high nibble for even p.
    swap exchanges the 8-row groups 1 and 2."""
    m, k = 32, 256
    t = ternary(m, k, 2)
    got = encode_tl2(t, 0.25, TileConfig(m, k, 32, 192, 32))
    tri = t[:, :192].reshape(m, 64, 3).astype(np.int64)
    v = 9 * tri[..., 0] + 3 * tri[..., 1] + tri[..., 2]
    r, g = np.meshgrid(np.arange(m), np.arange(64), indexing="ij")
    idx = np.zeros(m * 192 // 6, np.int64)
    np.add.at(idx, 32 * (g // 2) + _swap(r), np.abs(v) << np.where(g % 2 == 0, 4, 0))
    words = np.zeros(m * 64 // 16, np.int64)
    np.add.at(words, 16 * (g // 8) + r % 16, (v < 0).astype(np.int64) << (15 - (2 * (g % 8) + r // 16)))
    pr = t[:, 192:].reshape(m, 32, 2).astype(np.int64)
    r2, p = np.meshgrid(np.arange(m), np.arange(32), indexing="ij")
    two = np.zeros(m * 64 // 4, np.int64)
    np.add.at(two, 256 * (p // 16) + 32 * (p % 16 // 2) + _swap(r2),
              (3 * pr[..., 0] + pr[..., 1] + 4) << np.where(p % 2 == 0, 4, 0))
    want = np.concatenate([idx.astype(np.uint8), words.astype("<u2").view(np.uint8), two.astype(np.uint8)])
    assert np.array_equal(got[: want.size], want)
    off = ggml_type("TL2").nbytes((k, m)) - 32
    assert got.size == off + 32 and not got[want.size: off].any() and got[off: off + 4].view("<f4")[0] == 0.25


def test_tl2_uniform_weights_give_the_extreme_codes():
    m, k = 64, 288
    tile = TileConfig(m, k, 64, 96, 32)  # K3 = 288, K2 = 0
    plus = encode_tl2(np.ones((m, k), np.int8), 1.0, tile)
    minus = encode_tl2(-np.ones((m, k), np.int8), 1.0, tile)
    n3, ns = m * k // 6, m * k // 24
    assert (plus[:n3] == 0xDD).all() and not plus[n3:n3 + ns].any()  # index 13 = |9+3+1|
    assert (minus[:n3] == 0xDD).all() and (minus[n3:n3 + ns] == 0xFF).all()


# -- round trips ------------------------------------------------------------------------------------------
@st.composite
def tl_cases(draw):
    flavor = draw(st.sampled_from(["tl1", "tl2"]))
    bm = 32 if flavor == "tl2" else draw(st.sampled_from([32, 64]))
    BM = bm * draw(st.integers(1, 3))
    m = BM * draw(st.integers(1, 3))
    if flavor == "tl1":
        BK = (256 // bm) * draw(st.integers(1, 8))
        k = BK * draw(st.integers(1, 4))
    else:
        BK = 24 * draw(st.integers(1, 12))
        k2 = 32 * draw(st.integers(0, min(8, (BK - 1) // 32)))  # K % BK: below BK, at most 256
        n = max(draw(st.integers(1, 3)), -(-(256 - k2) // BK))  # K >= 256
        k = BK * n + k2
    seed = draw(st.integers(0, 2**32 - 1))
    return flavor, TileConfig(m, k, BM, BK, bm), seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tl_cases())
def test_round_trip_is_exact(case):
    flavor, tile, seed = case
    tile.check(flavor)
    t = ternary(tile.m, tile.k, seed)
    enc, dec = (encode_tl1, decode_tl1) if flavor == "tl1" else (encode_tl2, decode_tl2)
    raw = enc(t, 0.125, tile)
    assert raw.size == ggml_type(flavor.upper()).nbytes((tile.k, tile.m))
    assert np.array_equal(dec(raw, tile.m, tile.k, tile), t)
    nb = tile.m // tile.BM
    if nb > 1:  # any range of tiles decodes alone
        assert np.array_equal(dec(raw, tile.m, tile.k, tile, 1, nb), t[tile.BM:])


def test_corrupt_codes_are_refused():
    tile = TileConfig(32, 8, 32, 8, 32)
    raw = encode_tl1(ternary(32, 8), 1.0, tile)
    raw[3] = 0x9F
    with pytest.raises(FormatError, match="pair code 15 > 8"):
        decode_tl1(raw, 32, 8, tile)


def test_a_tile_for_another_shape_is_refused():
    with pytest.raises(KernelConfigError, match="entry is for M=32, K=8, the tensor is M=64, K=8"):
        encode_tl1(ternary(64, 8), 1.0, TileConfig(32, 8, 32, 8, 32))


# -- loading ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flavor", ["tl1", "tl2"])
def test_loader_binds_through_the_files_metadata_key(tmp_path, flavor):
    m, k = 128, 512
    t = ternary(m, k, 5)
    tile = default_tile(flavor, m, k)
    raw = (encode_tl1 if flavor == "tl1" else encode_tl2)(t, 0.75, tile)
    w = GGUFWriter(tmp_path / "t.gguf")
    w.add(KEY_KERNEL_CONFIG, parse_ini(f"[Kernels_0]\nm = {m}\nk = {k}\nbm = {tile.BM}\nbk = {tile.BK}\n"
                                       f"bmm = {tile.bm}\n", "x").to_ini())
    w.add_tensor("w", raw, shape=(k, m), gtype=flavor.upper(), nbytes=raw.nbytes)
    w.write()
    with GGUFReader(tmp_path / "t.gguf") as r:
        pw = load_weight(r, "w", strict=True)
        assert pw.flavor == flavor and pw.scale == 0.75 and pw.tile == tile
        assert np.array_equal(pw.values(0, m), t)
        assert np.array_equal(pw.values(5, 70), t[5:70])  # rows inside tiles


def test_a_tl_tensor_with_a_bad_scale_is_refused(tmp_path):
    m, k = 64, 256
    tile = default_tile("tl2", m, k)
    raw = encode_tl2(ternary(m, k), 1.0, tile)
    raw[-32:-28] = np.array([np.nan], "<f4").view(np.uint8)
    w = GGUFWriter(tmp_path / "t.gguf")
    w.add(KEY_KERNEL_CONFIG, f"[Kernels_0]\nm = {m}\nk = {k}\nbm = {tile.BM}\nbk = {tile.BK}\nbmm = 32\n")
    w.add_tensor("w", raw, shape=(k, m), gtype="TL2", nbytes=raw.nbytes)
    w.write()
    with GGUFReader(tmp_path / "t.gguf") as r, pytest.raises(FormatError, match="not a positive finite f32"):
        load_weight(r, "w")


# -- synthetic TL models through the engine --------------------------------------------------------
@pytest.mark.parametrize("flavor", ["tl1", "tl2"])
def test_synth_tl_model_carries_its_config_and_computes_as_i2s(bitnet_model_factory, flavor):
    """The same seed gives the same ternary weights and scales in every format; TL tensors decode
    to them and run through the same exact per-token integer kernel as I2_S, so the logits are
    bit-identical (bitnet.cpp's TL2 and I2_S agree bit for bit too, ../shared/spec/FORMATS.md)."""
    from bitnet.model import BitNetModel
    from bitnet.synth.model import PRESETS, projection_shapes

    path = bitnet_model_factory(fmt=flavor, seed=3, embed_format="f16")
    with GGUFReader(path) as r:
        cfg = parse_ini(r.get(KEY_KERNEL_CONFIG), "meta")
        assert {(t.m, t.k) for t in cfg.tiles} == set(projection_shapes(PRESETS["tiny"]).values())
        assert r.tensor("blk.0.ffn_down.weight").type_name == flavor.upper()
    ids = np.array([381, 40, 41, 300, 7])
    tl = BitNetModel(path, profile="bitnet.cpp", strict=True)
    i2 = BitNetModel(bitnet_model_factory(fmt="i2_s", seed=3, embed_format="f16"), profile="bitnet.cpp", strict=True)
    a = tl.forward(ids, tl.new_cache(), 0)
    b = i2.forward(ids, i2.new_cache(), 0)
    assert np.isfinite(a).all() and np.array_equal(a, b)


# -- the TL2 LUT kernel's numerics --------------------------------------------------------------------
def _tl2_weight(tmp_path, t, scale, tile):
    w = GGUFWriter(tmp_path / "w.gguf")
    w.add(KEY_KERNEL_CONFIG, f"[Kernels_0]\nm = {tile.m}\nk = {tile.k}\nbm = {tile.BM}\nbk = {tile.BK}\nbmm = 32\n")
    raw = encode_tl2(t, scale, tile)
    w.add_tensor("w", raw, shape=(tile.k, tile.m), gtype="TL2", nbytes=raw.nbytes)
    w.write()
    r = GGUFReader(tmp_path / "w.gguf")
    return r, load_weight(r, "w", strict=True)


def test_tl2_lut_activations_are_per_token_absmax_without_the_floor():
    from bitnet.kernels.activations import per_token_absmax, tl2_lut

    x = np.random.default_rng(4).standard_normal((5, 96)).astype(np.float32)
    a, b = tl2_lut(x), per_token_absmax(x)
    assert np.array_equal(a.q, b.q) and np.array_equal(a.scale, b.scale)
    x[2] = 0
    with pytest.raises(FormatError, match="row 2 is all zero"):
        tl2_lut(x)


def test_tl2_lut_kernel_is_the_exact_integer_matmul_when_tiles_fit_int16(tmp_path):
    from bitnet.kernels.activations import tl2_lut
    from bitnet.kernels.numpy_kernels import gemm_per_token, gemm_tl2_lut

    tile = TileConfig(64, 352, 32, 96, 32)  # K3 = 288 (3 tiles of 96), K2 = 64 (2 tiles of 32)
    t = ternary(64, 352, 8)
    r, pw = _tl2_weight(tmp_path, t, 0.5, tile)
    with r:
        x = tl2_lut(np.random.default_rng(9).standard_normal((3, 352)).astype(np.float32))
        run = gemm_tl2_lut(x, pw)
        exact = t.astype(np.int64) @ x.q.T.astype(np.int64)  # [out, T]
        assert np.array_equal(run.y, (exact.T.astype(np.float32) / x.scale[:, None]) * np.float32(0.5))
        assert np.array_equal(run.y, gemm_per_token(x, pw).y)
        assert str(run.kernel_id).startswith("tl2_tl2lut")


def test_tl2_lut_kernel_wraps_a_tile_sum_past_int16_as_the_simd_accumulator_does(tmp_path):
    """BK = 264: one tile of 88 triples, all weights +1, all activations at max (q = 127):
    the tile sum 264 * 127 = 33528 wraps in the int16 accumulator to 33528 - 65536 = -32008."""
    from bitnet.kernels.activations import tl2_lut
    from bitnet.kernels.numpy_kernels import gemm_tl2_lut

    tile = TileConfig(32, 264, 32, 264, 32)
    r, pw = _tl2_weight(tmp_path, np.ones((32, 264), np.int8), 1.0, tile)
    with r:
        x = tl2_lut(np.full((1, 264), 3.0, np.float32))
        assert (x.q == 127).all()
        y = gemm_tl2_lut(x, pw).y
    assert np.array_equal(y, np.full((1, 32), np.float32(-32008) / x.scale[0], np.float32))


def test_tl2_model_under_the_lut_profile(bitnet_model_factory):
    """The synthesiser's tiles (BK 96) never leave int16, so the LUT profile's logits equal the
    plain bitnet.cpp profile's bit for bit; the run log shows the LUT kernel ran."""
    from bitnet.kernels.runlog import KERNEL_LOG
    from bitnet.model import BitNetModel

    path = bitnet_model_factory(fmt="tl2", seed=3, embed_format="f16")
    ids = np.array([381, 40, 41])
    lut = BitNetModel(path, profile="bitnet.cpp-tl2", strict=True)
    ref = BitNetModel(path, profile="bitnet.cpp", strict=True)
    KERNEL_LOG.reset()
    a = lut.forward(ids, lut.new_cache(), 0)
    assert any(k.id.startswith("tl2_tl2lut_gemm") for k in KERNEL_LOG.snapshot())
    assert np.array_equal(a, ref.forward(ids, ref.new_cache(), 0))


@pytest.mark.parametrize("flavor", ["tl1", "tl2"])
def test_synth_tl_bitnet_arch_keeps_the_scale_in_the_tensor(bitnet_model_factory, flavor):
    """bitnet.cpp's TL builds never load `blk.N.*.scale` tensors (its llama.cpp skips them under
    GGML_BITNET_*_TL*, and a file that has them fails to load there), so a TL `bitnet` model
    carries each scale in its tensor, as the converter writes it; it computes what the I2_S
    `bitnet` model of the same seed (bare codes times a `.scale` tensor) computes."""
    from bitnet.model import BitNetModel

    path = bitnet_model_factory(arch="bitnet", fmt=flavor, seed=3)
    with GGUFReader(path) as r:
        assert not [t.name for t in r.tensors if t.name.endswith(".scale")]
    ids = np.array([381, 40, 41, 300, 7])
    tl = BitNetModel(path, profile="bitnet.cpp", strict=True)
    i2 = BitNetModel(bitnet_model_factory(arch="bitnet", fmt="i2_s", seed=3), profile="bitnet.cpp", strict=True)
    a, b = tl.forward(ids, tl.new_cache(), 0), i2.forward(ids, i2.new_cache(), 0)
    assert np.isfinite(a).all() and np.allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())


# -- TL1's LUT numerics (bitnet.cpp's TL1 kernels are ARM-only: checked here without a build) ---------
def _tl1_weight(tmp_path, t, scale, tile):
    w = GGUFWriter(tmp_path / "w1.gguf")
    w.add(KEY_KERNEL_CONFIG, f"[Kernels_0]\nm = {tile.m}\nk = {tile.k}\nbm = {tile.BM}\nbk = {tile.BK}\nbmm = {tile.bm}\n")
    raw = encode_tl1(t, scale, tile)
    w.add_tensor("w", raw, shape=(tile.k, tile.m), gtype="TL1", nbytes=raw.nbytes)
    w.write()
    r = GGUFReader(tmp_path / "w1.gguf")
    return r, load_weight(r, "w", strict=True)


def test_tl1_lut_kernel_is_the_exact_integer_matmul_when_tiles_fit_int16(tmp_path):
    """codegen_tl1: activations by per_tensor_quant (127 / max|x|, no floor, vcvtnq: nearest
    even), LUT entries = exact pair sums, each BK tile summed in int16 lanes, tiles in int32,
    then acc / lut_scale * scale. BK = 128 keeps every tile sum within int16 (128 * 127)."""
    from bitnet.kernels.activations import tl2_lut
    from bitnet.kernels.numpy_kernels import gemm_tl2_lut

    tile = TileConfig(64, 256, 32, 128, 32)
    t = ternary(64, 256, 11)
    r, pw = _tl1_weight(tmp_path, t, 0.25, tile)
    with r:
        x = tl2_lut(np.random.default_rng(4).standard_normal((3, 256)).astype(np.float32))
        y = gemm_tl2_lut(x, pw).y
        exact = t.astype(np.int64) @ x.q.T.astype(np.int64)
        assert np.array_equal(y, (exact.T.astype(np.float32) / x.scale[:, None]) * np.float32(0.25))


def test_tl1_lut_kernel_wraps_a_tile_sum_past_int16(tmp_path):
    """BK = 512 (a legal TL1 tile): all weights +1, all activations at 127: the tile's int16
    lanes end at 512 * 127 = 65024 - 65536 = -512."""
    from bitnet.kernels.activations import tl2_lut
    from bitnet.kernels.numpy_kernels import gemm_tl2_lut

    tile = TileConfig(32, 512, 32, 512, 32)
    r, pw = _tl1_weight(tmp_path, np.ones((32, 512), np.int8), 1.0, tile)
    with r:
        x = tl2_lut(np.full((1, 512), 2.0, np.float32))
        assert (x.q == 127).all()
        y = gemm_tl2_lut(x, pw).y
    assert np.array_equal(y, np.full((1, 32), np.float32(-512) / x.scale[0], np.float32))


def test_tl1_model_under_the_tl1_lut_profile(bitnet_model_factory):
    """A synthetic TL1 model runs its projections through the LUT kernel under bitnet.cpp-tl1;
    with the synthesiser's tiles (BK 128) nothing wraps, so the logits equal the same profile's
    arithmetic with exact integer dots (the I2_S model of the same seed)."""
    from bitnet.kernels.runlog import KERNEL_LOG
    from bitnet.model import BitNetModel

    ids = np.array([381, 40, 41])
    tl1 = BitNetModel(bitnet_model_factory(fmt="tl1", seed=3, embed_format="f16"), profile="bitnet.cpp-tl1", strict=True)
    KERNEL_LOG.reset()
    a = tl1.forward(ids, tl1.new_cache(), 0)
    assert any(k.id.startswith("tl1_tl2lut_gemm") for k in KERNEL_LOG.snapshot())
    i2 = BitNetModel(bitnet_model_factory(fmt="i2_s", seed=3, embed_format="f16"), profile="bitnet.cpp-tl1", strict=True)
    assert np.array_equal(a, i2.forward(ids, i2.new_cache(), 0))


@pytest.mark.parametrize("flavor", ["tl1", "tl2"])
def test_a_tl_model_defaults_to_its_bitnet_cpp_lut_profile(bitnet_model_factory, flavor):
    """Only bitnet.cpp computes TL files, and only through its LUT kernels: without --profile a
    TL model runs the matching bitnet.cpp LUT profile (what `--engine reference` then compares)."""
    from bitnet.model import BitNetModel

    assert BitNetModel(bitnet_model_factory(arch="bitnet", fmt=flavor, seed=3)).profile.name == f"bitnet.cpp-{flavor}"
