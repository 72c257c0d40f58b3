"""The shared fixtures folder (issue 15): model recipes rebuild the pinned bytes, prompts are the
ones receipts name, and the plugin hands both to any test suite (AC26)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bitnet.receipts.build import sha256_file
from bitnet.receipts.policy import load_yaml

pytestmark = pytest.mark.ac26
ROOT = Path(__file__).resolve().parents[1]


def test_plugin_finds_the_checkouts_fixtures(bitnet_fixtures_dir):
    assert bitnet_fixtures_dir == ROOT / "fixtures"
    assert (bitnet_fixtures_dir / "receipts" / "good" / "base.json").is_file()


def test_pinned_recipes_rebuild_their_bytes(bitnet_fixtures_dir, bitnet_recipe_model):
    recipes = load_yaml(bitnet_fixtures_dir / "models.yml")["models"]
    pinned = {k: v for k, v in recipes.items() if "sha256" in v}
    assert pinned
    for name, r in pinned.items():
        assert sha256_file(bitnet_recipe_model(name)) == r["sha256"], name
    base = json.loads((bitnet_fixtures_dir / "receipts" / "good" / "base.json").read_text())
    assert recipes["default-i2s"]["sha256"] == base["model"]["sha256"]


def test_prompts_are_the_ones_receipts_name(bitnet_fixtures_dir):
    from bitnet.cli.benchmark_cmd import BENCH_PROMPT

    prompts = load_yaml(bitnet_fixtures_dir / "prompts.yml")["prompts"]
    assert prompts["bench"]["text"] == BENCH_PROMPT
    for name, p in prompts.items():
        if "sha256" in p:
            assert hashlib.sha256(p["text"].encode("utf-8")).hexdigest() == p["sha256"], name
    base = json.loads((bitnet_fixtures_dir / "receipts" / "good" / "base.json").read_text())
    assert base["prompt"]["sha256"] == prompts["bench"]["sha256"]


def test_unknown_recipe_is_a_usage_error(bitnet_recipe_model):
    with pytest.raises(pytest.UsageError, match="known: default-i2s"):
        bitnet_recipe_model("nope")
