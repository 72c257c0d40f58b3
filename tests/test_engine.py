"""Generation: seeds, samplers, stop conditions, timings."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.engine import Engine, SamplerConfig, sample
from bitnet.errors import ConfigError

PROMPT = [381, 40, 41, 300]


@pytest.fixture(scope="module")
def engine(bitnet_model_factory):
    return Engine(bitnet_model_factory(seed=11))


def test_same_seed_same_tokens_other_seed_other_tokens(engine):
    s = SamplerConfig(temperature=1.0, top_k=0, top_p=1.0)
    a = engine.generate(PROMPT, max_tokens=16, sampler=s, seed=7, ignore_eog=True).ids
    b = engine.generate(PROMPT, max_tokens=16, sampler=s, seed=7, ignore_eog=True).ids
    c = engine.generate(PROMPT, max_tokens=16, sampler=s, seed=8, ignore_eog=True).ids
    assert a == b and a != c


def test_seed_from_environment(engine, monkeypatch):
    s = SamplerConfig(temperature=1.0)
    monkeypatch.setenv("BITNET_DETERMINISTIC", "1")
    a = engine.generate(PROMPT, max_tokens=8, sampler=s, ignore_eog=True)
    assert a.seed == 0
    monkeypatch.setenv("BITNET_SEED", "5")
    b = engine.generate(PROMPT, max_tokens=8, sampler=s, ignore_eog=True)
    assert b.seed == 5 and b.ids == engine.generate(PROMPT, max_tokens=8, sampler=s, seed=5, ignore_eog=True).ids
    monkeypatch.setenv("BITNET_SEED", "x")
    with pytest.raises(ConfigError, match="BITNET_SEED"):
        engine.generate(PROMPT, max_tokens=1, sampler=s)


def test_greedy_follows_argmax_of_full_recompute(engine):
    r = engine.generate(PROMPT, max_tokens=6, sampler=SamplerConfig(greedy=True), ignore_eog=True)
    seq = list(PROMPT)
    for tok in r.ids:
        assert tok == int(np.argmax(engine.logits(seq)[-1]))
        seq.append(tok)


def test_timings_one_step_per_generated_token(engine):
    r = engine.generate(PROMPT, max_tokens=5, sampler=SamplerConfig(greedy=True), ignore_eog=True)
    t = r.timings
    assert len(r.ids) == 5 == len(t.decode_step_s)
    assert all(s > 0 for s in t.decode_step_s) and t.prefill_s > 0
    assert t.total_s >= t.load_s + t.prefill_s + t.decode_s


def test_eog_stops(engine):
    eos = engine._eog_ids()
    assert eos
    r = engine.generate(PROMPT, max_tokens=50, sampler=SamplerConfig(greedy=True))
    assert r.stop_reason in ("eog", "max_tokens")
    if r.stop_reason == "eog":
        assert r.ids[-1] in eos


def test_return_prompt_logits(engine):
    r = engine.generate(PROMPT, max_tokens=1, return_prompt_logits=True, seed=0)
    np.testing.assert_allclose(r.prompt_logits, engine.logits(PROMPT), rtol=1e-5, atol=1e-5)


def test_sampler_rules():
    rng = np.random.default_rng(0)
    z = np.array([1.0, 3.0, 2.0, -1.0])
    assert sample(z, SamplerConfig(greedy=True), rng, []) == 1
    assert sample(z, SamplerConfig(temperature=0), rng, []) == 1
    assert all(sample(z, SamplerConfig(temperature=5.0, top_k=1), rng, []) == 1 for _ in range(20))
    assert all(sample(z, SamplerConfig(temperature=1.0, top_k=0, top_p=0.01), rng, []) == 1 for _ in range(20))
    picks = {sample(z, SamplerConfig(temperature=1.0, top_k=2, top_p=1.0), rng, []) for _ in range(200)}
    assert picks == {1, 2}
    # repetition penalty (llama.cpp semantics) can move the argmax away from a seen token
    assert sample(z, SamplerConfig(greedy=True, repeat_penalty=2.0), rng, [1]) == 2
    for bad in (dict(temperature=-1), dict(top_k=-1), dict(top_p=0), dict(repeat_penalty=0)):
        with pytest.raises(ConfigError):
            SamplerConfig(**bad)
