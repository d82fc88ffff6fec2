"""What the command lines print about params, presets and sweep presets: words a user reads, no torch."""
from __future__ import annotations

import re
import textwrap
import types
import typing
from dataclasses import fields

import params as params_module
from params import CHOICES, PRESET_DESCRIPTIONS, SWEEP_DESCRIPTIONS, SWEEPS, Params

SECTION = re.compile(r"^    # --- (.+?) ---\s*$")
FIELD = re.compile(r"^    (\w+): .*?(?:#\s*(.*))?$")


def as_typed(value) -> str:
    """A value as a user types it in YAML or --set: null, true/false, numbers and words bare, empty text as ""."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    return str(value)


def words(options: list[str]) -> str:
    """['a', 'b', 'c'] → 'a, b or c'."""
    return options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]


def type_in_words(name: str) -> str:
    """A param's type as a user reads it: 'float or null', 'true, false or auto', 'bf16, false or auto', 'int or
    auto'; the choices of params.CHOICES where it has them ('auto' last)."""
    if name == "metrics":
        return "metric names or groups, comma-joined, or true/false"
    if name in CHOICES:
        options = [as_typed(v) for v in CHOICES[name]]
        return words([o for o in options if o != "auto"] + (["auto"] if "auto" in options else []))
    annotation = typing.get_type_hints(Params)[name]
    kinds = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    names = {type(None): "null", bool: "true or false", int: "int", float: "float", str: "text"}
    spoken = [names.get(kind, getattr(kind, "__name__", str(kind))) for kind in kinds]
    if str in kinds and len(kinds) > 1:  # a number or a word: the only word is auto (pack)
        spoken = [s for s in spoken if s != "text"] + ["auto"]
    return words(spoken)


def param_sections() -> list[tuple[str, list[tuple[str, str]]]]:
    """[(section title, [(param, trailing comment), ...]), ...] in the order of params.py's `# --- section ---`
    lines inside the Params dataclass."""
    with open(params_module.__file__, encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("class Params"))
    known, sections = {f.name for f in fields(Params)}, []
    for line in lines[start + 1:]:
        if line and not line.startswith(" "):
            break
        section, field = SECTION.match(line), FIELD.match(line)
        if section:
            sections.append((section.group(1), []))
        elif field and field.group(1) in known:
            if not sections:
                sections.append(("params", []))
            sections[-1][1].append((field.group(1), (field.group(2) or "").strip()))
    return sections


def param_table() -> str:
    """Every param under its section of params.py: name, type in words, default as typed, meaning."""
    defaults = {f.name: as_typed(f.default) for f in fields(Params)}
    sections = param_sections()
    rows = [(name, type_in_words(name), defaults[name], comment) for _, members in sections
            for name, comment in members]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    header = ("param", "type", "default", "meaning")
    out = [f"  {header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]:<{widths[2]}}  {header[3]}"]
    for title, members in sections:
        out += ["", f"{title}:"]
        out += [f"  {n:<{widths[0]}}  {t:<{widths[1]}}  {d:<{widths[2]}}  {c}" for n, t, d, c in rows
                if n in dict(members)]
    return "\n".join(out)


def entry(name: str, text: str, indent: int) -> str:
    """`name` then `text` wrapped at 110 columns, continuation lines under the text."""
    return textwrap.fill(text, 110, initial_indent=f"  {name:<{indent - 3}} ", subsequent_indent=" " * indent)


def preset_list() -> str:
    """A paragraph per run preset: its name and description."""
    return "\n".join(entry(name, PRESET_DESCRIPTIONS[name], 29) for name in params_module.PRESETS)


def sweep_list() -> str:
    """A paragraph per sweep preset: its name, its number of points (the grid expanded) and its description."""
    from betavae.scale.sweep_spec import preset_points

    return "\n".join(entry(name, f"{len(preset_points(name))} points. {SWEEP_DESCRIPTIONS[name]}", 27)
                     for name in SWEEPS)
