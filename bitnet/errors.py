"""Typed errors of the whole project.

Each carries the facts (file, offset, tensor, expected, found) in its message so that a user can
act on it; the CLI turns every one of them into one line on stderr and a documented exit code.
"""

from __future__ import annotations


class BitNetError(Exception):
    """Base of every error this project raises on purpose."""


class GGUFError(BitNetError, ValueError):
    """A GGUF file is malformed, truncated or inconsistent.

    The message names the file, the byte offset and what was expected there.
    """

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None):
        self.path = path
        self.offset = offset
        where = []
        if path is not None:
            where.append(str(path))
        if offset is not None:
            where.append(f"offset {offset}")
        super().__init__(f"{': '.join(where) + ': ' if where else ''}{message}")


class FormatError(BitNetError, ValueError):
    """A tensor's bytes do not fit the weight format it claims (shape, block rule, size)."""


class StrictModeError(BitNetError):
    """Strict mode refused a fallback or a within-tolerance decision."""


class KVCacheError(BitNetError, ValueError):
    """A KV-cache operation broke a guardrail (layer, heads, head_dim, position, context)."""


class ReceiptError(BitNetError, ValueError):
    """A receipt is unreadable or malformed (not: it fails verification)."""


class BridgeError(BitNetError):
    """The C++ reference bridge could not be built, loaded or run."""


class ConfigError(BitNetError, ValueError):
    """A request is inconsistent (unknown preset, arch or format; a model missing a config key)."""


class MissingExtraError(BitNetError, ImportError):
    """A feature needs an optional extra that is not installed; the message names the feature,
    the missing package and the `pip install 'bitnet-harness[EXTRA]'` that brings it."""

    def __init__(self, feature: str, package: str, extra: str):
        self.feature, self.package, self.extra = feature, package, extra
        super().__init__(f"{feature} needs the `{package}` package, not installed: "
                         f"pip install 'bitnet-harness[{extra}]'")


class TokenizerError(BitNetError, ValueError):
    """A GGUF's tokenizer metadata is missing or inconsistent, or a request cannot be served
    (an unknown pre-tokenizer, a token id outside the vocabulary)."""


class NonFiniteLogitsError(BitNetError, ValueError):
    """The model produced NaN or infinite logits (corrupt weights, a NaN in the metadata): no
    token can be sampled from them, and picking one anyway would hide the corruption. The
    message names the first non-finite position."""


def naming_file(err: BitNetError, path: object) -> BitNetError:
    """`err` with `path: ` in front unless its message already names the file; same type, so
    callers still catch what they caught. Used where a file-agnostic layer (weight formats,
    flavor detection, the tokenizer's rules) raised about a file's content."""
    text = str(err)
    if str(path) in text:
        return err
    try:
        new = type(err)(f"{path}: {text}")
    except TypeError:  # an error type with a different constructor: keep the original
        return err
    new.__cause__ = err.__cause__
    return new


# -- strict mode: one switch that turns every fallback into an error --------------------------
#: `BITNET_STRICT_MODE=1` (or `--strict` / `strict=True` where a function takes it) makes the
#: loader refuse within-tolerance flavors and unknown tensor types, the model refuse missing
#: config keys it would otherwise default the way llama.cpp does, and the kernel dispatcher
#: refuse any fallback to the NumPy kernels.
STRICT_ENV = "BITNET_STRICT_MODE"


def strict_enabled(explicit: bool | None = None) -> bool:
    """An explicit argument wins; otherwise BITNET_STRICT_MODE, parsed by bitnet.settings (a
    value that is neither on nor off, like 2, is a ConfigError, not silently off)."""
    if explicit is not None:
        return bool(explicit)
    from bitnet.settings import settings

    return settings().strict


class CapabilityMissing(BitNetError):
    """An engine declared it cannot do what was asked: a test meeting this is skipped with the
    message as its reason. Defined here, not in `bitnet.engines`, so that the pytest plugin's
    per-test hook can name it without importing NumPy inside a pytester run (whose module
    snapshot would then drop NumPy and break its next import)."""
