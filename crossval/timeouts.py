"""The one timeout shared by every parity comparison (AC4): our engine's side and the C++
worker both get PARITY_TIMEOUT_S seconds, so a comparison cannot hang forever on either."""

PARITY_TIMEOUT_S = 60.0
