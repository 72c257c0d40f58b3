"""The bitnet-harness pytest plugin (entry point `pytest11: bitnet`).

- AC markers come from the acceptance catalog (`policies/acceptance.yml`): `pytest -m ac3`
  selects a criterion's tests, and an unknown `acN` fails collection under `--strict-markers`
  because only catalog ids are registered.
- `--ac-report` prints which criteria have tests and how their tests ended. A skip is reported
  as a skip: it never counts towards "passed".
- `--crossval`, `--bitnet-cpp-dir`, `--bitnet-gguf`: tests marked `crossval` are skipped with a
  reason unless `--crossval` is given.
- `--engine=SPEC [--reference=SPEC] [--engine-gate=exact|cross] [--bitnet-gguf=M.gguf ...]`:
  adds the parity suite (`crossval.parity_suite`) to the run, judging the engine under
  test against the reference (default: ours). `--crossval --bitnet-cpp-dir=DIR` without
  `--engine` runs it as `--engine=libllama:DIR`.
- `--bitnet-strict` sets BITNET_STRICT_MODE=1 for the run (strict mode forbids fallbacks).
- Fixtures: `bitnet_tiny_model` (a real tiny GGUF built by the synthesiser), `bitnet_gguf`,
  `bitnet_cpp_dir`.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bitnet.errors import CapabilityMissing

AC_ID = re.compile(r"^ac\d+$")
CATALOG_REL = Path("policies") / "acceptance.yml"
_REPORT_KEY = pytest.StashKey["ACReporter"]()


@dataclass(frozen=True)
class Criterion:
    id: str
    title: str
    statement: str


def find_catalog(rootpath: Path, configured: str | None = None) -> Path | None:
    """The catalog path: the ini option, else `policies/acceptance.yml` under the rootdir,
    else next to the `bitnet` package (editable installs and source checkouts), else the copy
    packaged in the wheel (`bitnet/_resources/policies`), so a user's own repository gets the
    AC markers too."""
    from bitnet.receipts.policy import PACKAGED

    candidates = []
    if configured:
        candidates.append(Path(configured) if Path(configured).is_absolute() else rootpath / configured)
    candidates.append(rootpath / CATALOG_REL)
    candidates.append(Path(__file__).resolve().parents[1] / CATALOG_REL)
    candidates.append(Path(__file__).resolve().parent / PACKAGED / CATALOG_REL)
    for c in candidates:
        if c.is_file():
            return c
    return None


def load_catalog(path: Path) -> list[Criterion]:
    """Parse and check the catalog; a malformed one is a usage error, not a silent no-op."""
    from ruamel.yaml import YAML

    data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    entries = (data or {}).get("criteria")
    if not isinstance(entries, list):
        raise pytest.UsageError(f"{path}: expected a top-level 'criteria' list")
    out, seen = [], set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in ("id", "title", "statement")):
            raise pytest.UsageError(f"{path}: criteria[{i}] needs string fields id, title, statement")
        if not AC_ID.match(e["id"]) or e["id"] in seen:
            raise pytest.UsageError(f"{path}: criteria[{i}] id {e['id']!r} is not a new 'acN'")
        seen.add(e["id"])
        out.append(Criterion(e["id"], e["title"], e["statement"]))
    return out


def _env_path(key: str) -> str | None:
    from bitnet.errors import ConfigError
    from bitnet.settings import settings

    try:
        v = getattr(settings(), key)
    except ConfigError as e:
        raise pytest.UsageError(str(e)) from None
    return str(v) if v else None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bitnet", "bitnet-harness")
    group.addoption("--crossval", action="store_true", default=False,
                    help="run tests marked 'crossval' against the C++ reference (libllama)")
    group.addoption("--bitnet-cpp-dir", default=_env_path("cpp_dir"), metavar="DIR",
                    help="llama.cpp / bitnet.cpp checkout with a build, or the reference cache folder")
    group.addoption("--bitnet-gguf", action="append", default=None, metavar="MODEL.gguf",
                    help="a user model to include in model-level tests (repeatable; default $BITNET_GGUF)")
    group.addoption("--engine", default=None, metavar="SPEC",
                    help='run the parity suite against this engine: reference[:PROFILE][@BACKEND], libllama:DIR, '
                         'hf:[DIR], cmd:"PROGRAM ARGS" or a plugin kind')
    group.addoption("--reference", default=None, metavar="SPEC",
                    help="the engine the suite compares against (default: ours, in the engine's claimed numerics)")
    group.addoption("--engine-gate", choices=("exact", "cross"), default="exact",
                    help="parity gate of the engine suite (policies/parity.yml)")
    group.addoption("--engine-receipts", default=None, metavar="DIR",
                    help="write one parity receipt (schema 2.x, naming both engines) per suite comparison here")
    group.addoption("--bitnet-strict", action="store_true", default=False,
                    help="set BITNET_STRICT_MODE=1: every fallback is an error")
    group.addoption("--ac-report", action="store_true", default=False,
                    help="print acceptance-criteria coverage (tests and outcomes per AC)")
    parser.addini("bitnet_acceptance", "path of the acceptance catalog", default="")


#: an AC whose selected tests skipped more than this share is flagged "mostly skipped"
MOSTLY_SKIPPED = 0.5


@dataclass
class ACRow:
    """One AC's line of the report. `collected` = selected + deselected; of the selected,
    passed + failed + skipped + not_run (interrupted, or -x stopped the run)."""

    id: str
    title: str
    collected: int
    deselected: int
    passed: int
    failed: int
    skipped: int
    skip_reasons: list[tuple[str, int]]  # most frequent first

    @property
    def selected(self) -> int:
        return self.collected - self.deselected

    @property
    def not_run(self) -> int:
        return self.selected - self.passed - self.failed - self.skipped

    @property
    def flag(self) -> str:
        if not self.collected:
            return "no tests"
        if not self.selected:
            return "all deselected"
        if self.skipped > MOSTLY_SKIPPED * self.selected:
            return f"MOSTLY SKIPPED ({self.skipped} of {self.selected})"
        return ""


def _skip_reason(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return f"xfail: {report.wasxfail}" if report.wasxfail else "xfail"
    lr = report.longrepr
    reason = lr[2] if isinstance(lr, tuple) and len(lr) == 3 else str(lr)
    return reason.removeprefix("Skipped: ").strip().splitlines()[0] if reason.strip() else "(no reason)"


@dataclass(eq=False)  # hashable by identity: pluggy keeps registered plugins in sets
class ACReporter:
    """Collects which tests carry which AC marker, which were deselected, and how each test
    ended (with the skip reason).

    A deselected test (`-m`, `-k`) exists but did not run: it is counted apart, so `pytest -m
    ac3` does not report every other AC as having no tests. A skip is never a pass, and an AC
    whose selected tests mostly skipped is flagged with the reasons.

    Registered as a plugin object in `pytest_configure` so its hooks see its own state."""

    criteria: list[Criterion]
    show: bool = False
    tests: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # ac -> nodeids
    deselected: set[str] = field(default_factory=set)
    outcomes: dict[str, str] = field(default_factory=dict)  # nodeid -> passed/failed/skipped
    reasons: dict[str, str] = field(default_factory=dict)  # nodeid -> skip reason

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # The worst phase wins: a failing setup/teardown fails the test, a skip is a skip.
        prev = self.outcomes.get(report.nodeid)
        if report.failed:
            self.outcomes[report.nodeid] = "failed"
        elif report.skipped and prev != "failed":
            self.outcomes[report.nodeid] = "skipped"
            self.reasons[report.nodeid] = _skip_reason(report)
        elif report.passed and report.when == "call" and prev is None:
            self.outcomes[report.nodeid] = "passed"

    def pytest_deselected(self, items) -> None:
        """Deselected tests (`-m`, `-k`) do not run; they are reported as deselected. Their AC
        markers are recorded here: `-m` may deselect them before our modifyitems sees them."""
        for item in items:
            self.deselected.add(item.nodeid)
            self.note(item)

    def note(self, item: pytest.Item) -> None:
        for m in item.iter_markers():
            if AC_ID.match(m.name):
                self.tests[m.name].add(item.nodeid)

    def rows(self) -> list[ACRow]:
        out = []
        for c in self.criteria:
            ids = self.tests.get(c.id, set())
            counts = {"passed": 0, "failed": 0, "skipped": 0}
            reasons: dict[str, int] = defaultdict(int)
            for nid in ids - self.deselected:
                o = self.outcomes.get(nid)
                if o in counts:
                    counts[o] += 1
                if o == "skipped":
                    reasons[self.reasons.get(nid, "(no reason)")] += 1
            out.append(ACRow(c.id, c.title, len(ids), len(ids & self.deselected), counts["passed"],
                             counts["failed"], counts["skipped"],
                             sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))))
        return out

    def summary(self) -> list[tuple[str, str, int, int, int, int]]:
        """Rows (id, title, selected, passed, failed, skipped) in catalog order."""
        return [(r.id, r.title, r.selected, r.passed, r.failed, r.skipped) for r in self.rows()]

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.show:
            return
        tr = terminalreporter
        rows = self.rows()
        tr.write_sep("=", "acceptance criteria coverage")
        tr.write_line(f"{'AC':<6}{'selected':>9}{'desel':>7}{'passed':>8}{'failed':>8}{'skipped':>9}  title")
        for r in rows:
            flag = f"  ({r.flag})" if r.flag else ""
            tr.write_line(f"{r.id:<6}{r.selected:>9}{r.deselected:>7}{r.passed:>8}{r.failed:>8}"
                          f"{r.skipped:>9}  {r.title}{flag}")
        flagged = [r for r in rows if r.flag.startswith("MOSTLY")]
        if flagged:
            tr.write_sep("-", "ACs whose tests mostly skipped: not evidence of a pass")
            for r in flagged:
                tr.write_line(f"{r.id}: {r.skipped} of {r.selected} selected tests skipped")
                for reason, n in r.skip_reasons[:5]:
                    tr.write_line(f"    {n:>4} x {reason[:150]}")
                if len(r.skip_reasons) > 5:
                    tr.write_line(f"    ... and {len(r.skip_reasons) - 5} other reasons")


def pytest_configure(config: pytest.Config) -> None:
    catalog = find_catalog(config.rootpath, config.getini("bitnet_acceptance") or None)
    criteria = load_catalog(catalog) if catalog else []
    for c in criteria:
        config.addinivalue_line("markers", f"{c.id}: {c.title}")
    config.addinivalue_line("markers", "crossval: compares against the C++ reference; needs --crossval")
    config.addinivalue_line("markers", "slow: long-running; deselect with -m 'not slow'")
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped cleanly without one")
    reporter = ACReporter(criteria, show=config.getoption("--ac-report"))
    config.stash[_REPORT_KEY] = reporter
    config.pluginmanager.register(reporter, "bitnet-ac-reporter")
    if config.getoption("--bitnet-strict"):
        os.environ["BITNET_STRICT_MODE"] = "1"
    config.addinivalue_line("markers", "engine_suite: the parity suite run against --engine")
    if _add_suite(config):
        config.args.append(str(SUITE))  # `pytest --engine=SPEC` alone runs the suite, wherever it is called


#: the suite lives in crossval (it compares through crossval.pair); named by path, not imported:
#: the bitnet library never imports crossval. Both packages are installed side by side.
SUITE = Path(__file__).resolve().parents[1] / "crossval" / "parity_suite.py"


def engine_spec(config: pytest.Config) -> str | None:
    """--engine, else libllama:DIR for the older spelling `--crossval --bitnet-cpp-dir=DIR`."""
    spec = config.getoption("--engine", None)
    if spec:
        return spec
    cpp = config.getoption("--bitnet-cpp-dir", None)
    if config.getoption("--crossval", False) and cpp:
        return f"libllama:{cpp}"
    return None


def _add_suite(config: pytest.Config) -> bool:
    """--engine adds the suite to any run; the older `--crossval --bitnet-cpp-dir` spelling adds
    it only to a whole-suite run (no test paths named), not to `pytest --crossval tests/x.py`."""
    if not engine_spec(config) or any("parity_suite" in str(a) for a in config.args):
        return False
    return bool(config.getoption("--engine", None)) or config.args_source != pytest.Config.ArgsSource.ARGS


def user_models(config: pytest.Config) -> list[Path]:
    """--bitnet-gguf files (repeatable), else $BITNET_GGUF; a missing file is a usage error."""
    env = _env_path("gguf")
    given = config.getoption("--bitnet-gguf", None) or ([env] if env else [])
    out = []
    for v in given:
        p = Path(v).expanduser()
        if not p.is_file():
            raise pytest.UsageError(f"--bitnet-gguf {p}: no such file")
        out.append(p)
    return out


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """An engine declaring it cannot do what a test asks (bitnet.engines.CapabilityMissing)
    makes that test a skip with the engine's reason: never a pass, never a failure."""
    try:
        return (yield)
    except CapabilityMissing as e:
        pytest.skip(str(e))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reporter = config.stash[_REPORT_KEY]
    crossval = config.getoption("--crossval")
    skip = pytest.mark.skip(reason="crossval test: pass --crossval (and --bitnet-cpp-dir) to run it")
    for item in items:
        reporter.note(item)
        if item.get_closest_marker("crossval") and not crossval:
            item.add_marker(skip)


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def bitnet_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny BitNet GGUF (arch `bitnet-b1.58`, F32 weights, byte-level vocab), built by the
    project's synthesiser once per session."""
    from bitnet.synth import synthesize

    path = tmp_path_factory.mktemp("bitnet-models") / "tiny.gguf"
    return synthesize(path, preset="tiny", arch="bitnet-b1.58", fmt="f32", seed=0)


@pytest.fixture(scope="session")
def bitnet_model_factory(tmp_path_factory: pytest.TempPathFactory):
    """Build tiny models on demand: `factory(arch=..., fmt=..., seed=...)`, cached per args."""
    from bitnet.synth import synthesize

    cache: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("bitnet-model-factory")

    def make(*, preset: str = "tiny", arch: str = "bitnet-b1.58", fmt: str = "f32", seed: int = 0, **kw) -> Path:
        key = (preset, arch, fmt, seed, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = synthesize(root / f"{preset}-{arch}-{fmt}-{seed}-{len(cache)}.gguf",
                                    preset=preset, arch=arch, fmt=fmt, seed=seed, **kw)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def bitnet_gguf(pytestconfig: pytest.Config) -> Path:
    """The user's model from --bitnet-gguf / BITNET_GGUF; skipped with a reason when absent."""
    models = user_models(pytestconfig)
    if not models:
        pytest.skip("no user model: pass --bitnet-gguf=MODEL.gguf")
    return models[0]


@pytest.fixture(scope="session")
def bitnet_cpp_dir(pytestconfig: pytest.Config) -> Path:
    """The C++ reference folder from --bitnet-cpp-dir; skipped with a reason when absent."""
    value = pytestconfig.getoption("--bitnet-cpp-dir")
    if not value:
        pytest.skip("no C++ reference: pass --bitnet-cpp-dir=DIR (see docs/how-to/crossval.md)")
    return Path(value)


@pytest.fixture(scope="session")
def engine_under_test(pytestconfig: pytest.Config):
    """The engine from --engine (or --crossval --bitnet-cpp-dir); skipped with a reason when none."""
    spec = engine_spec(pytestconfig)
    if not spec:
        pytest.skip("no engine under test: pass --engine=SPEC (docs/how-to/validate-your-engine.md)")
    from bitnet.engines import CapabilityMissing, open_engine
    from bitnet.errors import BitNetError

    try:
        eng = open_engine(spec)
    except CapabilityMissing as e:  # e.g. hf: without the [hf] extra: every suite test skips, saying why
        pytest.skip(f"--engine {spec}: {e}")
    except BitNetError as e:
        raise pytest.UsageError(f"--engine {spec}: {e}") from None
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def reference_engine_spec(pytestconfig: pytest.Config) -> str | None:
    """--reference, or None: ours, in the numerics the engine under test claims."""
    return pytestconfig.getoption("--reference")


# -- shared fixtures (the repository's fixtures/, or the copy packaged in the wheel) -----------
def fixtures_dir() -> Path | None:
    """The harness's shared test data: `fixtures/` of a checkout (next to the package), else
    `bitnet/_resources/fixtures` of an installed wheel; None when neither is there."""
    from bitnet.receipts.policy import PACKAGED

    here = Path(__file__).resolve()
    for cand in (here.parents[1] / "fixtures", here.parent / PACKAGED / "fixtures"):
        if (cand / "models.yml").is_file():
            return cand
    return None


@pytest.fixture(scope="session")
def bitnet_fixtures_dir() -> Path:
    """The shared fixtures folder (receipt corpora, model recipes, prompts); see fixtures/README.md."""
    d = fixtures_dir()
    if d is None:
        pytest.skip("bitnet-harness fixtures not found (neither a checkout's fixtures/ nor the wheel's copy)")
    return d


@pytest.fixture(scope="session")
def bitnet_recipe_model(bitnet_fixtures_dir: Path, bitnet_model_factory):
    """`bitnet_recipe_model("default-i2s")`: the model a recipe of fixtures/models.yml names,
    synthesised once per session (byte for byte what the recipe's sha256 pins)."""
    from ruamel.yaml import YAML

    recipes = YAML(typ="safe").load((bitnet_fixtures_dir / "models.yml").read_text(encoding="utf-8"))["models"]

    def make(name: str) -> Path:
        if name not in recipes:
            raise pytest.UsageError(f"no model recipe {name!r} in {bitnet_fixtures_dir / 'models.yml'}; "
                                    f"known: {', '.join(recipes)}")
        r = recipes[name]
        return bitnet_model_factory(preset=r["preset"], arch=r["arch"], fmt=r["format"], seed=r["seed"])

    return make
