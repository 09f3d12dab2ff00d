"""Flags from a dataclass: every field is a `--flag` with its help text; unknown flags are errors.

train.py, evaluate.py and pretrain.py each keep their settings in one dataclass whose fields carry a
help string (`opt`). `given_flags` returns only what the command line set, so a caller can lay it over
other defaults (a preset's, or a resumed run's saved config).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import field


def opt(default, help: str):
    """A dataclass field with its help text (and so its --flag)."""
    return field(default=default, metadata={"help": help})


def given_flags(cls, argv: list[str] | None, description: str) -> dict:
    """Parse argv against the fields of `cls`; return {field: value} for the flags actually given."""
    ap = argparse.ArgumentParser(description=description, argument_default=argparse.SUPPRESS)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if str(f.type) in ("bool", "<class 'bool'>"):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            ap.add_argument(flag, type=kind, help=f"{f.metadata['help']} (default {f.default})")
    return vars(ap.parse_args(argv))
