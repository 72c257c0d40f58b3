"""Engine specs -> adapters: one table of built-in kinds plus the `bitnet_harness.engines`
entry-point group, where a third-party package registers `KIND = "module:factory"` and
`factory(spec, arg) -> Engine` builds its adapter for `KIND:ARG`."""

from __future__ import annotations

from importlib import import_module, metadata

from bitnet.engines.protocol import Engine
from bitnet.errors import ConfigError

ENTRY_POINT_GROUP = "bitnet_harness.engines"

#: kind -> "module:factory"; adding an engine kind = one adapter module + one line here
BUILTIN = {
    "reference": "bitnet.engines.reference:from_spec",
    "libllama": "crossval.engine:from_spec",  # by name: the bitnet library never imports crossval
    "hf": "bitnet.engines.hf:from_spec",
    "cmd": "bitnet.engines.cmd:from_spec",
}


def parse_spec(spec: str) -> tuple[str, str]:
    """`KIND[:ARG]` -> (kind, arg). `reference@native` has its `@backend` in the arg."""
    s = spec.strip()
    if not s:
        raise ConfigError("empty engine spec; expected KIND[:ARG], e.g. reference, libllama:DIR, hf:, cmd:\"PROGRAM ARGS\"")
    kind, sep, arg = s.partition(":")
    if "@" in kind and not sep:  # reference@native
        kind, _, backend = kind.partition("@")
        arg = "@" + backend
    return kind.strip().lower(), arg


def entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def known_kinds() -> list[str]:
    return sorted(set(BUILTIN) | set(entry_points()))


def open_engine(spec: str) -> Engine:
    """Build the adapter a spec names (nothing is loaded yet: call `load(model)`)."""
    kind, arg = parse_spec(spec)
    if kind in BUILTIN:
        mod, _, fn = BUILTIN[kind].partition(":")
        factory = getattr(import_module(mod), fn)
    else:
        eps = entry_points()
        if kind not in eps:
            raise ConfigError(f"unknown engine kind {kind!r} in spec {spec!r}; known: {', '.join(known_kinds())} "
                              f"(third-party kinds register in the {ENTRY_POINT_GROUP!r} entry-point group)")
        try:
            factory = eps[kind].load()
        except Exception as e:  # a broken plugin is a usage error naming the plugin, not a traceback
            raise ConfigError(f"engine plugin {kind!r} ({eps[kind].value}) does not import: {type(e).__name__}: {e}") from None
    engine = factory(spec.strip(), arg)
    if not isinstance(engine, Engine):
        raise ConfigError(f"engine factory for {kind!r} returned {type(engine).__name__}, not a bitnet.engines.Engine")
    return engine
