"""`bitnet-verify-receipt`: lands with the receipts issue; until then it says so and exits 2."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print(
        "bitnet-verify-receipt: not implemented yet (arrives with the receipts issue); "
        "no receipt was checked",
        file=sys.stderr,
    )
    return 2


def console_main() -> None:
    sys.exit(main())
