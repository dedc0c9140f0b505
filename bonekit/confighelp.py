"""What every config key means, read from the schema dataclasses' own source comments (``key: type = default  #
meaning``), so ``--help`` and docs/config_reference.md cannot drift from the code."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import typing
from functools import cache

_FIELD = re.compile(r"^\s+(\w+)\s*:[^#]*?(?:#\s*(.*))?$")


@cache
def _comments(cls: type) -> dict[str, str]:
    """``field name -> comment`` from the class body (the docstring's first line for nested sections)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's comments override its base's
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in src.splitlines()[1:]:
            m = _FIELD.match(line)
            if m and m.group(2):
                out[m.group(1)] = m.group(2).strip()
    return out


def rows(schema: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """``[(section, key, default, meaning)]`` for every leaf key of ``schema`` (nested dataclasses flattened)."""
    hints = typing.get_type_hints(schema)
    notes = _comments(schema)
    inst = schema()
    out = []
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        value = getattr(inst, f.name)
        typ = hints.get(f.name)
        if dataclasses.is_dataclass(typ):
            sub = rows(typ, key + ".")
            # defaults of a nested section may differ from its class's (default_factory=lambda: X(steps=60))
            sub = [(s, k, _fmt(_get(value, k[len(key) + 1:])), m) for s, k, _, m in sub]
            out += sub
        else:
            section = prefix[:-1] if prefix else ""
            out.append((section, key, _fmt(value), notes.get(f.name, "")))
    return out


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _fmt(v) -> str:
    if isinstance(v, str):
        return repr(v) if v == "" else v
    if isinstance(v, list) and len(v) > 6:
        return f"[{', '.join(map(str, v[:3]))}, ... ({len(v)} items)]"
    return str(v)


def sections(schema: type) -> dict[str, list[tuple[str, str, str]]]:
    """``{section: [(key, default, meaning)]}`` with top-level keys under ""."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for section, key, default, meaning in rows(schema):
        top = section.split(".")[0]
        out.setdefault(top, []).append((key, default, meaning))
    return out


def format_help(schema: type, usage: str = "") -> str:
    """The ``--help`` text: keys grouped by section, each with its default and meaning."""
    lines = [usage] if usage else []
    lines.append("Keys (set as key=value, or in a YAML file given as config=FILE.yaml):")
    for section, items in sections(schema).items():
        lines.append(f"\n[{section or 'general'}]")
        width = max(len(k) for k, _, _ in items)
        for key, default, meaning in items:
            lines.append(f"  {key:<{width}}  = {default:<12} {meaning}".rstrip())
    return "\n".join(lines)


def did_you_mean(key: str, schema: type) -> str:
    """`` (did you mean 'loop.steps'?)`` for a mistyped dotted key, or ""."""
    keys = [k for _, k, _, _ in rows(schema)]
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
