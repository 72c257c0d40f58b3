"""The parity suite, run against any engine: `pytest --engine=SPEC [--reference=SPEC]
[--engine-gate=exact|cross] [--bitnet-gguf=M.gguf ...]` (the bitnet pytest plugin adds this
module to the run; `pytest --pyargs crossval.parity_suite --engine=SPEC` names it).

- every (arch, weight format) the engine claims to load, on a synthesised tiny model: logits
  for every position of a short prompt, and a greedy continuation;
- a prompt past 512 tokens, per architecture the engine claims;
- tokenizer parity, when the engine tokenizes;
- each of the user's own models (`--bitnet-gguf`), the test id naming the file.

The reference is ours (`reference`) in the numerics the engine claims in `describe()`, unless
`--reference` names another. What the engine does not claim, or cannot do, is skipped with the
reason; an engine that breaks is a failure carrying its error; nothing here passes without a
comparison that passed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bitnet.engines.reference import ARCHS, FORMATS

pytestmark = pytest.mark.engine_suite

MATRIX = [(a, f) for a in ARCHS for f in FORMATS]
SHORT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330]
LONG_T = 600  # past 512: a batch or a KV page boundary many engines have
N_GREEDY = 8
TEXTS = ["Hello world", " leading space", "Numbers 12345 and 3.14159", "tabs\tand\nnewlines", "ünïcödé ß 中文 😀",
         "<|begin_of_text|>special?", "  double  spaces  ", "'s 'll 're contractions", "a" * 200, ""]


@pytest.fixture(scope="session")
def suite_models(tmp_path_factory):
    """(arch, fmt) -> a tiny synthesised model with room for the long prompt (context 1024)."""
    from bitnet.synth import PRESETS, synthesize

    root = tmp_path_factory.mktemp("engine-suite-models")
    shape = replace(PRESETS["tiny"], n_ctx=1024)
    cache: dict[tuple[str, str], Path] = {}

    def make(arch: str, fmt: str) -> Path:
        if (arch, fmt) not in cache:
            cache[arch, fmt] = synthesize(root / f"{arch}-{fmt}.gguf", preset=shape, arch=arch, fmt=fmt, seed=11)
        return cache[arch, fmt]

    return make


@pytest.fixture(scope="session")
def engine_info(engine_under_test):
    from bitnet.engines import EngineError

    try:
        return engine_under_test.describe()
    except EngineError as e:
        pytest.fail(f"the engine cannot describe itself: {e}", pytrace=False)


@pytest.fixture(scope="session")
def engine_caps(engine_under_test):
    from bitnet.engines import EngineError

    try:
        return engine_under_test.capabilities
    except EngineError as e:
        pytest.fail(f"the engine cannot declare its capabilities: {e}", pytrace=False)


@pytest.fixture(scope="session")
def reference_engine(reference_engine_spec, engine_under_test, engine_info):
    """The engine to compare against: --reference, else ours in the engine's claimed numerics
    (inferred from the model when the engine claims none we know)."""
    from bitnet.engines import open_engine
    from bitnet.model.profiles import PROFILES

    spec = reference_engine_spec
    if not spec:
        spec = f"reference:{engine_info.numerics}" if engine_info.numerics in PROFILES else "reference"
    ref = open_engine(spec)
    yield ref
    ref.close()


def _claimed(caps, arch: str, fmt: str, who: str) -> None:
    if not caps.claims(arch, fmt):
        pytest.skip(f"{who} does not claim to load {arch}/{fmt}")


def _judge(request, engine, reference, model: Path, ids: list[int], n_greedy: int):
    """One comparison; its parity receipt goes to --engine-receipts/<test name>.json when asked."""
    import re

    from crossval.pair import compare_engines

    gate = request.config.getoption("--engine-gate")
    folder = request.config.getoption("--engine-receipts")
    receipt = None
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        receipt = Path(folder) / (re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name) + ".json")
    c = compare_engines(engine, reference, model, ids, gate=gate, n_greedy=n_greedy, receipt=receipt)
    r = c.result
    if r.verdict == "skipped":
        pytest.skip(r.reason)
    if r.verdict == "error":
        pytest.fail(f"error: {r.reason}", pytrace=False)
    if r.verdict != "pass":
        where = f"first diverging position {r.first_divergence}" if r.first_divergence is not None else \
            f"greedy first divergence at generated token {r.greedy_first_divergence}"
        pytest.fail(f"{c.engine.spec} vs {c.reference.spec} on {model.name}: {r.verdict.upper()} ({gate}): "
                    f"{where}: {r.reason}", pytrace=False)
    return c


def test_engine_describes_itself(engine_under_test, engine_info, engine_caps):
    assert engine_info.spec == engine_under_test.spec
    for field in ("name", "version", "build", "numerics"):
        assert getattr(engine_info, field).strip(), f"describe() leaves {field} empty"
    assert engine_caps.logits, "an engine under test must give logits"


@pytest.mark.parametrize("arch,fmt", MATRIX, ids=[f"{a}/{f}" for a, f in MATRIX])
def test_logits_and_greedy(engine_under_test, engine_caps, reference_engine, suite_models, request, arch, fmt):
    _claimed(engine_caps, arch, fmt, f"engine {engine_under_test.spec}")
    _claimed(reference_engine.capabilities, arch, fmt, f"reference {reference_engine.spec}")
    n = N_GREEDY if engine_caps.greedy else 0  # compare_engines says why greedy was left out
    _judge(request, engine_under_test, reference_engine, suite_models(arch, fmt), SHORT, n)


@pytest.mark.parametrize("arch", ARCHS)
def test_long_prompt_past_512(engine_under_test, engine_caps, reference_engine, suite_models, request, arch):
    ref_caps = reference_engine.capabilities
    fmts = [f for f in FORMATS if engine_caps.claims(arch, f) and ref_caps.claims(arch, f)]
    if not fmts:
        pytest.skip(f"engine {engine_under_test.spec} claims no {arch} format the reference loads")
    if engine_caps.max_tokens is not None and engine_caps.max_tokens < LONG_T:
        pytest.skip(f"engine {engine_under_test.spec} evaluates at most {engine_caps.max_tokens} tokens")
    ids = np.random.default_rng(LONG_T).integers(3, 256, LONG_T).tolist()
    _judge(request, engine_under_test, reference_engine, suite_models(arch, fmts[0]), ids, 0)


def test_tokenizer_parity(engine_under_test, engine_caps, reference_engine, suite_models):
    from bitnet.engines import EngineError

    engine_under_test.require("tokenize")
    reference_engine.require("tokenize")
    claimed = [m for m in MATRIX if engine_caps.claims(*m) and reference_engine.capabilities.claims(*m)]
    if not claimed:
        pytest.skip("no model both engines load")
    model = suite_models(*claimed[0])
    for e in (engine_under_test, reference_engine):
        e.load(model)
    for add_special, parse_special in ((False, False), (True, True)):
        try:
            got = engine_under_test.tokenize_many(TEXTS, add_special, parse_special)
        except EngineError as err:
            pytest.fail(f"error: {err}", pytrace=False)
        want = reference_engine.tokenize_many(TEXTS, add_special, parse_special)
        bad = [(t, g, w) for t, g, w in zip(TEXTS, got, want, strict=True) if g != w]
        assert not bad, (f"tokenize(add_special={add_special}, parse_special={parse_special}) differs on "
                         f"{len(bad)} texts; first: {bad[0][0]!r}: engine {bad[0][1]}, reference {bad[0][2]}")


def pytest_generate_tests(metafunc):
    if "user_model" in metafunc.fixturenames:
        from bitnet.pytest_plugin import user_models

        models = user_models(metafunc.config)
        metafunc.parametrize("user_model", models or [None], ids=[m.name for m in models] or ["no-user-model"])


def test_user_model(engine_under_test, reference_engine, user_model, request):
    """The user's own model file: a short prompt from the model's tokenizer (ours), greedy too."""
    if user_model is None:
        pytest.skip("no user model: pass --bitnet-gguf=MODEL.gguf (repeatable)")
    ids = SHORT
    try:
        from bitnet.tokenizer import load_tokenizer

        ids = load_tokenizer(user_model).encode("The capital of France is", add_special=True, parse_special=True)
    except Exception:  # a file without a tokenizer still gets compared, on fixed ids
        pass
    _judge(request, engine_under_test, reference_engine, user_model, ids, 4)
