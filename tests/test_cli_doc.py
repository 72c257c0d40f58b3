"""docs/reference/cli.md covers every option that exists (issue 15): each command's row names
every long option its argparse parser accepts (read from `--help`, so nothing is listed twice)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reference" / "cli.md"
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def help_options(main, argv: list[str]) -> set[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):  # some mains catch it
        main(argv)
    return set(OPTION.findall(out.getvalue())) - {"--help"}


def doc_rows(prefix: str) -> str:
    rows = [ln for ln in DOC.read_text(encoding="utf-8").splitlines() if ln.startswith(f"| `{prefix}")]
    assert rows, f"{DOC.name} has no row for `{prefix}`"
    return "\n".join(rows)


def commands():
    from bitnet.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in sub.choices:
        yield pytest.param(f"bitnet {name}", ["bitnet", name], id=name)
    yield pytest.param("bitnet-verify-receipt", ["bitnet-verify-receipt"], id="verify-receipt")
    yield pytest.param("python -m crossval.setup", ["crossval.setup"], id="crossval.setup")
    yield pytest.param("python -m bitnet.tokenizer.fetch_vocab", ["fetch_vocab"], id="fetch_vocab")


def _main_for(which: list[str]):
    if which[0] == "bitnet":
        from bitnet.cli import build_parser

        return lambda argv: build_parser().parse_args([which[1], *argv])
    if which[0] == "bitnet-verify-receipt":
        from bitnet.cli.verify_receipt import main

        return main
    if which[0] == "crossval.setup":
        from crossval.setup import main

        return main
    from bitnet.tokenizer.fetch_vocab import main

    return main


@pytest.mark.parametrize("prefix,which", list(commands()))
def test_every_option_is_documented(prefix, which):
    options = help_options(_main_for(which), ["--help"])
    assert options, f"{prefix}: no options found in --help"
    rows = doc_rows(prefix)
    missing = sorted(o for o in options if o not in OPTION.findall(rows))
    assert not missing, f"docs/reference/cli.md's `{prefix}` row lacks {missing}"
