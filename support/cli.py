"""Flags from a dataclass: every field is a `--flag` with its help text; unknown flags are errors.

train.py (in config.py), evaluate.py and shapes/pretrain.py each keep their settings in one dataclass whose
fields carry a help string (`opt`). `given_flags` returns only what the command line set, so a caller can lay it over
other defaults (a preset's, or a resumed run's saved config).

Next to each dataclass, a table says what every number and path flag accepts (`{"lr": dict(above=0),
"out": dict(path="out")}`). `check_flags` checks a config against its table, the one check the three commands
share, before any model loads or any folder is made: the error is one line naming the flag, the value and
what it accepts. A number field missing from its table is a programming error, raised at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tempfile
from dataclasses import field
from pathlib import Path

PATH_KINDS = {
    "file": "an existing file",
    "folder": "an existing folder",
    "out": "a folder this run creates or writes into",
    "model": "an existing folder or a hub id org/name",
}


def opt(default, help: str):
    """A dataclass field with its help text (and so its --flag)."""
    return field(default=default, metadata={"help": help})


def given_flags(cls, argv: list[str] | None, description: str, presets: dict | None = None) -> dict:
    """Parse argv against the fields of `cls`; return {field: value} for the flags actually given.

    presets ({model: {field: value}}) are the values that replace a field's default for those models; --help
    shows them beside the default, so the help names the values that will run."""
    ap = argparse.ArgumentParser(description=description, argument_default=argparse.SUPPRESS)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if str(f.type) in ("bool", "<class 'bool'>"):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            ap.add_argument(flag, type=kind, help=f"{f.metadata['help']} ({default_text(f.name, f.default, presets)})")
    return vars(ap.parse_args(argv))


def default_text(name: str, default, presets: dict | None) -> str:
    """'default 20', or with presets that set the field: 'default 300 for shapes-janus, shapes-showo; 20 for
    the other models'."""
    if not presets or not any(name in values for values in presets.values()):
        return f"default {default}"
    by_value = {}
    for model, values in presets.items():
        by_value.setdefault(repr(values.get(name, default)), []).append(model)
    parts = [f"{value} for {', '.join(models)}" for value, models in by_value.items()]
    return f"default {'; '.join(parts)}; {default!r} for the other models"


# ------------------------------------------------------------------ checking
def check_flags(cfg, limits: dict) -> None:
    """Every field of the dataclass `cfg` against `limits` ({field: {min, max, above, below, path}}: inclusive
    bounds, exclusive bounds, a PATH_KINDS kind); ValueError on the first bad value, None always passes.
    Floats must also be finite: argparse's float() takes 'nan' and 'inf', and no setting means either."""
    for f in dataclasses.fields(cfg):
        value, rules = getattr(cfg, f.name), limits.get(f.name)
        if rules is None and str(f.type).split(" ")[0] in ("int", "float"):
            raise TypeError(f"{type(cfg).__name__}.{f.name} has no entry in its flag limits table")
        if value is None or rules is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{flag} {value}: not a number; give a finite value{range_text(rules)}")
        if isinstance(value, (int, float)) and not in_range(value, rules):
            raise ValueError(f"{flag} {value}: out of range; allowed{range_text(rules)}")
        if "path" in rules:
            problem = path_problem(str(value), rules["path"])
            if problem:
                raise ValueError(f"{flag} {value}: {problem}")


def in_range(value, rules: dict) -> bool:
    return (("min" not in rules or value >= rules["min"]) and ("max" not in rules or value <= rules["max"])
            and ("above" not in rules or value > rules["above"]) and ("below" not in rules or value < rules["below"]))


def range_text(rules: dict) -> str:
    """' >= 0 and < 1' for the declared bounds, '' without any."""
    signs = {"min": ">=", "above": ">", "max": "<=", "below": "<"}
    parts = [f"{sign} {rules[key]}" for key, sign in signs.items() if key in rules]
    return (" " + " and ".join(parts)) if parts else ""


def path_problem(value: str, kind: str) -> str | None:
    """What is wrong with `value` as a path of `kind` (PATH_KINDS), or None."""
    path = Path(value).expanduser()
    if kind == "file":
        if path.is_dir():
            return "is a folder; give a file"
        return None if path.is_file() else "no such file"
    if kind == "folder":
        if path.exists() and not path.is_dir():
            return "is a file; give a folder"
        return None if path.is_dir() else "no such folder"
    if kind == "model":  # a hub id has exactly one slash and does not start like a path (models.janus.resolve_folder)
        if path.exists():
            return None if path.is_dir() else "is a file; give a checkpoint folder or a hub id org/name"
        if value.startswith((".", "/", "~")) or value.count("/") != 1:
            return "no such folder (and not a hub id org/name)"
        return None
    return writable_folder_problem(path)


def writable_folder_problem(path) -> str | None:
    """Why `path` cannot become or be a folder we write into (it or an ancestor is a file, or the nearest
    existing folder is not writable), or None. Nothing is created."""
    path = Path(path).expanduser().absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return "is a file; give a folder" if existing == path else f"{existing} is a file; give a folder path"
    if not writable(existing):
        return f"cannot write into {existing}: choose a writable place or fix its permissions"
    return None


def writable(folder: Path) -> bool:
    """Whether this process can create entries in `folder`. Tried, not read from mode bits, which mislead under
    root, read-only mounts, ACLs and NFS root squashing; the probe folder is removed at once."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".unirl-write-probe-"))
        return True
    except OSError:
        return False
