"""ops.rms_norm(ggml=True), the profile knob rms_ggml: ggml_compute_forward_rms_norm_f32's
arithmetic bit for bit (upstream 0.3.36 ggml-cpu/ops.cpp and bitnet.cpp's fork ggml/src/ggml.c
run the same loop), its double sum sequential as ggml's `sum += (ggml_float)(x*x)` is, not
NumPy's pairwise .sum; and which profiles turn it on (AC38)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.model.ops import rms_norm, rms_norm_ggml_sum
from bitnet.model.profiles import PROFILES


def _ggml_scalar(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """A line-by-line transcription of the C loop: Python floats are C doubles, np.float32
    scalars round each float step."""
    f = np.float32
    y = np.empty_like(x)
    for t, row in enumerate(x):
        s = 0.0  # ggml_float sum = 0.0
        for v in row:
            s += float(f(v) * f(v))  # sum += (ggml_float)(x[i00] * x[i00]): the product in float
        mean = f(s / len(row))  # const float mean = sum/ne00
        scale = f(1.0) / np.sqrt(mean + f(eps))  # 1.0f/sqrtf(mean + eps), all float
        for i, v in enumerate(row):
            y[t, i] = f(v) * scale * w[i]  # x * scale * w, left to right in float
    return y


def _hand_built() -> np.ndarray:
    """A row whose sequential and pairwise double sums differ, and whose float mean differs
    with them: 1 + 2^-24 is the tie between the floats 1 and 1 + 2^-23; each 2^-54 square is
    below half an ulp of it and is lost one at a time, but pairwise sums them first (lanes 2..7)
    and lifts the total above the tie."""
    x = np.full((1, 16), 2.0 ** -27, np.float32)
    x[0, 0], x[0, 1] = 1.0, 2.0 ** -12
    return x


@pytest.mark.ac38
def test_sum_is_sequential_where_pairwise_differs():
    x = _hand_built()
    sq = np.square(x).astype(np.float64)
    seq = 0.0
    for v in sq[0]:
        seq += float(v)
    assert seq == 1 + 2 ** -24 and sq.sum() > seq  # the two orders really differ here
    assert rms_norm_ggml_sum(x)[0, 0] == seq
    assert np.float32(seq / 16) != np.float32(sq.sum() / 16)  # ... and so does the float mean
    w = np.ones(16, np.float32)
    got = rms_norm(x, w, 0.0, ggml=True)
    np.testing.assert_array_equal(got.view(np.uint32), _ggml_scalar(x, w, 0.0).view(np.uint32))


@pytest.mark.ac38
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # eps 0 on an all-zero row, overflowing squares
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(T=st.integers(1, 3), D=st.one_of(st.integers(1, 70), st.sampled_from([129, 136, 257, 600])),
       scale=st.sampled_from([1e-30, 1e-3, 1.0, 37.0, 1e6, 1e20]), eps=st.sampled_from([1e-5, 1e-6, 0.0]),
       seed=st.integers(0, 2**20))
def test_matches_a_scalar_transcription_of_ggml(T, D, scale, eps, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((T, D)) * scale).astype(np.float32)
    x[:, rng.random(D) < 0.1] = 0.0
    w = rng.uniform(-2, 2, D).astype(np.float32)
    np.testing.assert_array_equal(rms_norm(x, w, eps, ggml=True).view(np.uint32),
                                  _ggml_scalar(x, w, eps).view(np.uint32))


@pytest.mark.ac38
def test_profiles_that_use_ggml_rms_norm():
    """Both C++ engines' profiles compute RMSNorm as ggml does; the reference keeps the model's
    own math (double squares, NumPy's sum)."""
    assert {n for n, p in PROFILES.items() if p.rms_ggml} == {"llama.cpp", "bitnet.cpp", "bitnet.cpp-tl2",
                                                             "bitnet.cpp-tl1"}


IDS = [1, 5, 9, 2, 7, 3]


@pytest.mark.ac30
@pytest.mark.ac38
@pytest.mark.parametrize(("recipe", "profile"), [("crossval-tq2", "llama.cpp"), ("default-i2s", "bitnet.cpp")])
def test_forward_uses_the_profiles_rms_knob(bitnet_recipe_model, recipe, profile):
    """Every RMSNorm of the forward (4 per layer + output_norm) runs the form the profile
    names, the run log says so, and flipping rms_ggml alone changes the logits (bit-level;
    the knob's size, ~1e-7, is pinned at the function level above)."""
    import dataclasses

    from bitnet.kernels.runlog import KERNEL_LOG
    from bitnet.model import BitNetModel

    m = BitNetModel(bitnet_recipe_model(recipe), profile=profile)
    assert m.profile.rms_ggml
    KERNEL_LOG.reset()
    a = m.forward(np.asarray(IDS), m.new_cache(16), 0)
    calls = {k.id: k.calls for k in KERNEL_LOG.snapshot() if k.id.startswith("rms_norm")}
    assert calls == {"rms_norm_ggml_f32_numpy": 4 * m.config.n_layer + 1}
    m.profile = dataclasses.replace(m.profile, rms_ggml=False)
    b = m.forward(np.asarray(IDS), m.new_cache(16), 0)
    assert not np.array_equal(a, b)
    m.close()


@pytest.mark.ac38
@pytest.mark.parametrize(("recipe", "profile"), [("crossval-tq2", "llama.cpp"), ("default-i2s", "bitnet.cpp"),
                                                 ("default-i2s", "reference")])
def test_per_layer_forcing_computes_the_same_norms(bitnet_recipe_model, recipe, profile):
    """bitnet.model.layerwise runs each layer through the forward with the norms patched (the
    final norm skipped): fed the free-running layer inputs, it gives the free-running layer
    outputs bit for bit, so the forcing path uses the profile's RMSNorm form too."""
    from bitnet.model import BitNetModel
    from bitnet.model.layerwise import engine_l_out
    from bitnet.model.record import recording

    m = BitNetModel(bitnet_recipe_model(recipe), profile=profile)
    with recording() as rec:
        m.forward(np.asarray(IDS), m.new_cache(16), 0)
    free = np.stack([rec.get("l_out", i) for i in range(m.config.n_layer)])
    forced = engine_l_out(m, IDS)
    np.testing.assert_array_equal(forced.view(np.uint32), free.astype(np.float32).view(np.uint32))
    m.close()
