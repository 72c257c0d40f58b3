"""`python -m bitnet ...` is the `bitnet` command."""

from bitnet.cli import console_main

console_main()
