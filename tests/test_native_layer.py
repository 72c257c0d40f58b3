"""A block in three native calls (bitnet/model/native_layer.py, bitnet/kernels/native/layer.c) gives
the per-op path's logits bit for bit -- under every profile, I2_S and TQ2_0/TQ1_0, ReLU^2 and
SiLU FFNs, separate projection scales, prompt and decode steps -- and the run log records the same kernels
(ids, calls, bytes, rows); it steps aside for recordings, planted faults and the NumPy backend (AC38)."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.kernels.native import native_status

ok, why = native_status()
needs_native = pytest.mark.skipif(not ok, reason=f"native kernels unavailable: {why}")


def _run(m, fused: bool, monkeypatch, steps: int = 4):
    from bitnet.kernels.runlog import KERNEL_LOG
    from bitnet.model import bitnet_model as bm
    from bitnet.model.native_layer import NativeBlocks

    with monkeypatch.context() as mp:
        if not fused:
            mp.setattr(bm.NativeBlocks, "for_model", classmethod(lambda cls, model: None))
        else:
            assert NativeBlocks.for_model(m) is not None
        KERNEL_LOG.reset()
        c = m.new_cache(48)
        logits = [m.forward(np.array([1, 5, 9, 2, 33, 17, 4, 8, 100]), c, 0)]
        for i in range(steps):
            logits.append(m.forward(np.array([int(logits[-1][-1].argmax())]), c, 9 + i, all_logits=False))
        log = {r.id: (r.calls, r.bytes_read, r.rows) for r in KERNEL_LOG.snapshot()}
    return logits, log


@pytest.fixture
def native_backend():
    from bitnet.kernels import dispatch

    before = dispatch.get_backend()
    dispatch.set_backend("native")
    yield
    dispatch.set_backend(before)


CASES = [  # (arch, format, profile, shape)
    ("bitnet-b1.58", "i2_s", "bitnet.cpp", "tiny"),
    ("bitnet-b1.58", "i2_s", "reference", "tiny"),
    ("bitnet-b1.58", "i2_s", "bitnet.cpp", "hd128-gqa4"),
    ("bitnet", "tq2_0", "llama.cpp", "tiny"),
    ("bitnet", "tq1_0", "llama.cpp", "tiny"),
    ("bitnet", "i2_s", "bitnet.cpp", "tiny"),  # separate blk.N.<proj>.scale tensors
]


@needs_native
@pytest.mark.ac38
@pytest.mark.parametrize("arch,fmt,profile,shape", CASES)
def test_native_blocks_bit_identical_and_logged_alike(bitnet_model_factory, native_backend, monkeypatch,
                                                     arch, fmt, profile, shape):
    from bitnet.model.bitnet_model import BitNetModel
    from bitnet.synth import ModelShape

    preset = "tiny" if shape == "tiny" else ModelShape(n_embd=512, n_ff=512, n_layer=2, n_head=4, n_head_kv=1,
                                                      n_ctx=256)
    m = BitNetModel(bitnet_model_factory(preset=preset, arch=arch, fmt=fmt, seed=5), profile=profile)
    try:
        fused, flog = _run(m, True, monkeypatch)
        per_op, plog = _run(m, False, monkeypatch)
    finally:
        m.close()
    for a, b in zip(fused, per_op, strict=True):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    assert flog == plog
    # the RMSNorm form the profile asks for (knob rms_ggml: ggml's sequential sum) ran in C
    assert f"rms_norm{'_ggml' if m.profile.rms_ggml else ''}_f32_native" in flog
    assert f"rms_norm{'' if m.profile.rms_ggml else '_ggml'}_f32_native" not in flog
    assert f"ffn_{m.config.ffn_act}_mul_{'native' if m.config.ffn_act == 'relu2' else 'numpy'}" in flog


@needs_native
@pytest.mark.ac38
@pytest.mark.parametrize("fmt,profile,arch", [("i2_s", "bitnet.cpp", "bitnet-b1.58"), ("tq2_0", "llama.cpp", "bitnet")])
def test_native_blocks_same_bits_on_any_thread_count(bitnet_model_factory, native_backend, monkeypatch,
                                                     fmt, profile, arch):
    """Each block call is one parallel region whose threads split every projection's rows and
    meet at spin barriers (layer.c): 1, 2, 3 and 5 threads (more than this machine's cores, so
    waiting threads yield) give the per-op path's bits at one thread, prompt and decode steps."""
    from bitnet.kernels.native import backend as nb
    from bitnet.model.bitnet_model import BitNetModel
    from bitnet.synth import ModelShape

    shape = ModelShape(n_embd=512, n_ff=1024, n_layer=2, n_head=4, n_head_kv=1, n_ctx=256)
    m = BitNetModel(bitnet_model_factory(preset=shape, arch=arch, fmt=fmt, seed=7), profile=profile)
    before = nb.THREADS[0]
    try:
        nb.set_threads(1)
        want, wlog = _run(m, False, monkeypatch)
        for n in (1, 2, 3, 5):
            nb.set_threads(n)
            got, glog = _run(m, True, monkeypatch)
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
            assert glog == wlog, n
    finally:
        nb.set_threads(before)
        m.close()


@needs_native
@pytest.mark.ac38
def test_native_blocks_step_aside(bitnet_recipe_model, native_backend):
    """A recording, a planted fault or the NumPy backend: for_model says no, the per-op path runs."""
    from bitnet.kernels import dispatch
    from bitnet.kernels.runlog import KERNEL_LOG
    from bitnet.model import record
    from bitnet.model.bitnet_model import BitNetModel
    from bitnet.model.native_layer import NativeBlocks
    from crossval.faults import plant

    m = BitNetModel(bitnet_recipe_model("default-i2s"))
    try:
        assert NativeBlocks.for_model(m) is not None
        with record.recording():
            assert NativeBlocks.for_model(m) is None
        for fault in ("rms_eps_1e-6", "softmax_f16_no_max_sub", "kv_position_off_by_one", "attn_sub_norm_skipped",
                      "weight_scale_off_0.1pct", "rope_pairing_swapped"):
            with plant(fault):
                assert NativeBlocks.for_model(m) is None, fault
        with plant("rms_eps_1e-6"):
            KERNEL_LOG.reset()
            m.forward(np.array([1, 2, 3]), m.new_cache(8), 0)
            ids = {r.id for r in KERNEL_LOG.snapshot()}
            assert {"rms_norm_f32_numpy", "rms_norm_ggml_f32_numpy"} & ids, ids  # the planted NumPy norm ran
        dispatch.set_backend("numpy")
        assert NativeBlocks.for_model(m) is None
    finally:
        m.close()


@needs_native
@pytest.mark.ac38
def test_a_view_with_other_layers_gets_its_own_blocks(bitnet_model_factory, native_backend, monkeypatch):
    """bitnet.model.layerwise runs one layer through a copy.copy view of the model: the view's
    blocks are its layers, not the ones cached on the model it was copied from."""
    import copy

    from bitnet.model.bitnet_model import BitNetModel
    from bitnet.model.native_layer import NativeBlocks

    m = BitNetModel(bitnet_model_factory(preset="tiny", arch="bitnet-b1.58", fmt="i2_s", seed=5))
    try:
        assert NativeBlocks.for_model(m).layers[0]["wq"].keep is not None
        view = copy.copy(m)
        view.layers = [m.layers[1]]
        vb = NativeBlocks.for_model(view)
        assert len(vb.layers) == 1 and vb.model is view
        fused, _ = _run(view, True, monkeypatch, steps=2)
        per_op, _ = _run(view, False, monkeypatch, steps=2)
        for a, b in zip(fused, per_op, strict=True):
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    finally:
        m.close()
