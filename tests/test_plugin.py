"""The pytest plugin, exercised with pytester in isolated runs."""

from __future__ import annotations

from pathlib import Path

import pytest

CATALOG = Path(__file__).resolve().parents[1] / "policies" / "acceptance.yml"


@pytest.fixture
def tester(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(f"[pytest]\nbitnet_acceptance = {CATALOG}\n")
    return pytester


def test_catalog_markers_registered(tester):
    tester.makepyfile(
        """
        import pytest
        @pytest.mark.ac3
        def test_a(): pass
        @pytest.mark.ac19
        def test_b(): pass
        def test_c(): pass
        """
    )
    r = tester.runpytest("--strict-markers", "-m", "ac3")
    r.assert_outcomes(passed=1, deselected=2)
    out = tester.runpytest("--markers").stdout.str()
    assert "@pytest.mark.ac1: Strict loader" in out
    assert "@pytest.mark.ac19: Model validation policies" in out


def test_unknown_ac_marker_fails_collection(tester):
    tester.makepyfile(
        """
        import pytest
        @pytest.mark.ac99
        def test_a(): pass
        """
    )
    r = tester.runpytest("--strict-markers")
    assert r.ret != 0
    r.stdout.fnmatch_lines(["*'ac99' not found in `markers` configuration option*"])


@pytest.mark.ac27
def test_ac_report_counts_outcomes_and_never_counts_skips_as_passes(tester):
    tester.makepyfile(
        """
        import pytest
        @pytest.mark.ac5
        def test_pass(): pass
        @pytest.mark.ac5
        def test_fail(): assert False
        @pytest.mark.ac5
        def test_skip(): pytest.skip("not here")
        @pytest.mark.ac5
        @pytest.mark.crossval
        def test_crossval(): pass
        """
    )
    r = tester.runpytest("--ac-report")
    r.assert_outcomes(passed=1, failed=1, skipped=2)
    r.stdout.re_match_lines([r"ac5\s+4\s+0\s+1\s+1\s+2\s+Tokenizer parity and real vocab size$"])
    r.stdout.re_match_lines([r"ac3\s+0\s+0\s+0\s+0\s+0\s+KV-cache guardrails\s+\(no tests\)"])


@pytest.mark.ac27
def test_ac_report_tells_deselected_from_missing_and_flags_mostly_skipped(tester):
    """`pytest -m ac5` shows ac3's tests as deselected, not as "no tests"; an AC whose selected
    tests mostly skipped is flagged, with the skip reasons counted."""
    tester.makepyfile(
        """
        import pytest
        @pytest.mark.ac3
        def test_kv(): pass
        @pytest.mark.ac5
        def test_ok(): pass
        @pytest.mark.ac5
        def test_s1(): pytest.skip("no vocab files")
        @pytest.mark.ac5
        def test_s2(): pytest.skip("no vocab files")
        @pytest.mark.ac5
        @pytest.mark.skipif(True, reason="needs torch")
        def test_s3(): pass
        """
    )
    r = tester.runpytest("--ac-report", "-m", "ac5")
    r.assert_outcomes(passed=1, skipped=3, deselected=1)
    r.stdout.re_match_lines([r"ac3\s+0\s+1\s+0\s+0\s+0\s+KV-cache guardrails\s+\(all deselected\)"])
    r.stdout.re_match_lines([r"ac5\s+4\s+0\s+1\s+0\s+3\s+Tokenizer parity.*\(MOSTLY SKIPPED \(3 of 4\)\)"])
    r.stdout.re_match_lines([r"ac5: 3 of 4 selected tests skipped", r"\s+2 x no vocab files", r"\s+1 x needs torch"])
    assert "ac1 " in r.stdout.str() and "(no tests)" in r.stdout.str()


def test_crossval_skipped_with_reason_unless_requested(tester):
    tester.makepyfile(
        """
        import pytest
        @pytest.mark.crossval
        def test_x(): pass
        """
    )
    r = tester.runpytest("-rs")
    r.assert_outcomes(skipped=1)
    r.stdout.fnmatch_lines(["*crossval test: pass --crossval*"])
    r = tester.runpytest("--crossval")
    r.assert_outcomes(passed=1)


def test_options_and_fixtures(tester, tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    tester.makepyfile(
        f"""
        import os
        def test_gguf(bitnet_gguf):
            assert str(bitnet_gguf) == {str(model)!r}
        def test_cpp_dir_absent_skips(bitnet_cpp_dir):
            pass
        def test_strict_env():
            assert os.environ.get("BITNET_STRICT_MODE") == "1"
        """
    )
    r = tester.runpytest_subprocess(f"--bitnet-gguf={model}", "--bitnet-strict", "-rs")
    r.assert_outcomes(passed=2, skipped=1)
    r.stdout.fnmatch_lines(["*no C++ reference: pass --bitnet-cpp-dir*"])


def test_tiny_model_fixture_builds_a_real_gguf(tester):
    tester.makepyfile(
        """
        from bitnet.gguf import GGUFReader
        def test_tiny(bitnet_tiny_model, bitnet_model_factory):
            with GGUFReader(bitnet_tiny_model) as r:
                assert r.architecture == "bitnet-b1.58"
                assert r.tensor("blk.1.ffn_down.weight").shape == (512, 256)
            p = bitnet_model_factory(arch="bitnet", fmt="f16", seed=2)
            assert p == bitnet_model_factory(arch="bitnet", fmt="f16", seed=2)
            with GGUFReader(p) as r:
                assert r.architecture == "bitnet"
                assert r.tensor("blk.0.attn_q.scale").shape == (1,)
        """
    )
    tester.runpytest().assert_outcomes(passed=1)


def test_malformed_catalog_is_a_usage_error(pytester):
    bad = pytester.path / "bad.yml"
    bad.write_text("criteria:\n  - id: nope\n    title: t\n    statement: s\n")
    pytester.makeini(f"[pytest]\nbitnet_acceptance = {bad}\n")
    pytester.makepyfile("def test_a(): pass")
    r = pytester.runpytest()
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*id 'nope' is not a new 'acN'*"])
