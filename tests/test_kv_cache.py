"""KV-cache guardrails (AC3)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bitnet.errors import KVCacheError
from bitnet.model import KVCache, KVCacheWarning

pytestmark = pytest.mark.ac3


def kv(t, heads=2, d=8, fill=0.0):
    return np.full((heads, t, d), fill, np.float32), np.full((heads, t, d), fill, np.float32)


@pytest.mark.parametrize("field,value", [("n_layer", 0), ("n_kv_heads", -1), ("max_ctx", 0), ("head_dim", 2.5)])
def test_creation_checks(field, value):
    args = dict(n_layer=2, n_kv_heads=2, max_ctx=16, head_dim=8)
    args[field] = value
    with pytest.raises(KVCacheError, match=field):
        KVCache(**args)


def test_for_config_checks_context(bitnet_tiny_model):
    from bitnet.model import BitNetModel

    m = BitNetModel(bitnet_tiny_model)
    with pytest.raises(KVCacheError, match="exceeds the model's context_length 256"):
        KVCache.for_config(m.config, max_ctx=1000)
    c = KVCache.for_config(m.config)
    assert c.max_ctx == 256 and c.k[0].shape == (2, c.capacity, 64) and c.capacity <= 256


@pytest.mark.ac25
def test_cache_grows_on_demand_and_refuses_beyond_its_budget():
    c = KVCache(2, 2, 2**24, 8)  # a context of 16M positions costs nothing until used
    assert c.capacity <= 256 and c.nbytes == c.bytes_for(c.capacity)
    c.append(0, 0, *kv(300, fill=1.0))
    assert c.capacity >= 300 and c.view(0)[0].shape == (2, 300, 8) and float(c.view(0)[0].min()) == 1.0
    small = KVCache(2, 2, 2**24, 8, budget_bytes=2 * 2 * 2 * 512 * 8 * 4)
    small.append(0, 0, *kv(500))
    with pytest.raises(KVCacheError, match=r"would need [\d,]+ bytes .* more than the budget"):
        small.append(0, 500, *kv(100))
    assert small.length[0] == 500  # nothing was written


def test_append_checks_layer_heads_head_dim():
    c = KVCache(2, 2, 16, 8)
    with pytest.raises(KVCacheError, match="layer 2 out of range: the cache has 2 layers"):
        c.append(2, 0, *kv(1))
    with pytest.raises(KVCacheError, match="has 3 heads, the cache holds 2"):
        c.append(0, 0, *kv(1, heads=3))
    with pytest.raises(KVCacheError, match="head_dim 4 != cache head_dim 8"):
        c.append(0, 0, *kv(1, d=4))
    with pytest.raises(KVCacheError, match=r"must be \[n_kv_heads, T, head_dim\]"):
        c.append(0, 0, np.zeros((2, 8)), np.zeros((2, 8)))
    with pytest.raises(KVCacheError, match="leaves a gap"):
        c.append(0, 3, *kv(1))


def test_overflow_is_an_error_with_limits_never_truncation():
    c = KVCache(1, 2, 8, 8)
    c.append(0, 0, *kv(6))
    with pytest.raises(KVCacheError, match=r"context overflow: positions 6..8 exceed the cache's max context 8 \(max position 7\)"):
        c.append(0, 6, *kv(3))
    assert c.length[0] == 6  # nothing was written
    k, _ = c.view(0)
    assert k.shape == (2, 6, 8)
    with pytest.raises(KVCacheError, match="only 6 are stored"):
        c.view(0, 7)


def test_rewind_overwrites():
    c = KVCache(1, 2, 8, 8)
    c.append(0, 0, *kv(4, fill=1.0))
    c.append(0, 2, *kv(1, fill=5.0))
    k, _ = c.view(0)
    assert k.shape[1] == 3 and k[0, 2, 0] == 5.0


def test_warnings_once_per_layer_not_per_token():
    c = KVCache(2, 2, 10, 8, dtype=np.float16)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for pos in range(10):  # each token overflows F16 and, from position 8, fills > 90%
            for layer in range(2):
                c.append(layer, pos, *kv(1, fill=1e6))
    msgs = [str(w.message) for w in rec if issubclass(w.category, KVCacheWarning)]
    assert sorted(msgs) == sorted([
        "layer 0: K/V magnitude 1e+06 overflows the F16 cache (stored as inf)",
        "layer 1: K/V magnitude 1e+06 overflows the F16 cache (stored as inf)",
        "layer 0: KV cache 9/10 positions full",
        "layer 1: KV cache 9/10 positions full",
    ])


def test_engine_context_overflow_is_an_error(bitnet_tiny_model):
    from bitnet.engine import Engine
    from bitnet.errors import ConfigError

    e = Engine(bitnet_tiny_model, max_ctx=8)
    with pytest.raises(ConfigError, match="does not fit the context of 8"):
        e.generate(list(range(1, 9)), max_tokens=1)
    r = e.generate([1, 2, 3, 4, 5], max_tokens=10, sampler=None, seed=0, ignore_eog=True)
    assert r.stop_reason == "context" and len(r.ids) == 4
