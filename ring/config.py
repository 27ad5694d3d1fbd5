"""
Settings: how a run's settings are declared, read and checked, and how scripts report mistakes.

A script's settings are a dataclass whose fields are declared with `setting(help, default, rule)`
(TrainConfig in train.py). They come, in this order of precedence, from:
  1. the defaults;
  2. config files: plain Python that assigns values, e.g. configs/shakespeare.py;
  3. the command line: --key=value or --key value, converted to the default's type.
Every value is then checked against its rule ("> 0", "[0, 1)", a list of choices) and must be
finite, whether it came from a file, the command line or Python code (the dataclass checks itself on
creation). An unknown key names the closest valid one.
"""

import argparse
import dataclasses
import difflib
import math
import os
import re
import sys
from pathlib import Path


class UserError(Exception):
    """A mistake the user can fix (missing file, bad setting, no network...): one line, status 1."""


def run_main(main):
    """Run a script's main(); a UserError becomes one line on stderr and exit status 1, no
    traceback.

    Under torchrun every process would print the same error: only rank 0 does, the others exit
    quietly."""
    try:
        main()
    except UserError as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:  # e.g. in a download: the partial file is kept, resumed next time
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:  # disk full, read-only, a file where a directory should be, ...
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        sys.exit(1)


# --------------------------------------------------------------------------------------------------
# Declaring settings


def setting(help, default, rule=None):
    """A dataclass field with its help text and an optional rule: "> 0", ">= 1", "[0, 1)", "(0, 1]"
    (intervals, brackets inclusive), or a tuple of allowed values."""
    return dataclasses.field(default=default, metadata={"help": help, "rule": rule})


def with_defaults(cls, defaults, helps=None):
    """A subclass of the settings dataclass cls whose fields have other defaults (and, in helps,
    other help texts); their rules stay. finetune.py's settings are train.py's this way, with
    defaults for fine-tuning a pretrained model."""
    annotations, namespace = {}, {"__module__": cls.__module__, "__doc__": cls.__doc__}
    for f in dataclasses.fields(cls):
        if f.name in defaults or f.name in (helps or {}):
            metadata = {**f.metadata, "help": (helps or {}).get(f.name, f.metadata["help"])}
            annotations[f.name] = f.type
            namespace[f.name] = dataclasses.field(default=defaults.get(f.name, f.default),
                                                  metadata=metadata)
    unknown = set(defaults) - {f.name for f in dataclasses.fields(cls)}
    assert not unknown, f"no such settings: {unknown}"
    namespace["__annotations__"] = annotations
    return dataclasses.dataclass(type(cls.__name__, (cls,), namespace))


_COMPARISON = re.compile(r"(>=|>|<=|<)\s*(\S+)")
_INTERVAL = re.compile(r"([\[(])\s*(\S+),\s*(\S+)\s*([\])])")


def satisfies(value, rule):
    """Does value satisfy rule (see setting)?"""
    if rule is None:
        return True
    if isinstance(rule, tuple):
        return value in rule
    if m := _COMPARISON.fullmatch(rule):
        bound = float(m.group(2))
        holds = {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}
        return holds[m.group(1)]
    m = _INTERVAL.fullmatch(rule)
    low, high = float(m.group(2)), float(m.group(3))
    above = value >= low if m.group(1) == "[" else value > low
    below = value <= high if m.group(4) == "]" else value < high
    return above and below


def describe(rule):
    if isinstance(rule, tuple):
        return "one of " + ", ".join(map(str, rule))
    return rule if _COMPARISON.fullmatch(rule) else f"in {rule}"


def check_settings(cfg):
    """Check every field of a settings dataclass: type, finiteness and rule (else a UserError)."""
    for field in dataclasses.fields(cfg):
        value, expected = getattr(cfg, field.name), _type_of(field)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            setattr(cfg, field.name, value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise UserError(f"{field.name} must be {expected.__name__}, not {value!r}")
        if expected is float and not math.isfinite(value):
            raise UserError(f"{field.name} must be a finite number, not {value}")
        rule = field.metadata.get("rule")
        if not satisfies(value, rule):
            raise UserError(f"{field.name} must be {describe(rule)}, not {value!r}")


def _type_of(field):
    names = {"int": int, "float": float, "bool": bool, "str": str}
    return names[field.type] if isinstance(field.type, str) else field.type


# --------------------------------------------------------------------------------------------------
# Reading settings


def _closest(key, valid):
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    return f" (did you mean '{match[0]}'?)" if match else ""


def convert(text, expected, key):
    """A command-line string as the setting's type; a wrong one stops with one line (exit status 2,
    the convention for usage errors), not with argparse's usage message."""
    try:
        if expected is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return expected(text)
    except ValueError:
        kinds = {bool: "true or false", int: "an integer", float: "a number"}
        kind = kinds.get(expected, "a string")
        print(f"error: --{key} must be {kind}, not '{text}'", file=sys.stderr)
        raise SystemExit(2) from None


def read_config_file(path):
    """Run a config file; return the names it assigned (modules and _private names left out)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} not found")
    namespace = {}
    try:
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
    except Exception as e:  # a syntax error or failing expression in the user's file
        raise UserError(f"config file {path} failed: {type(e).__name__}: {e}") from None
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and not hasattr(v, "__spec__")}


def parse_config(config_class, argv=None, description=None):
    """A config_class instance from its defaults, config files and --key=value overrides, checked.

    A setting listed in config_class.FOLLOWS (e.g. lr_decay_iters follows max_iters) goes back to
    its default when the setting it follows is given on the command line and it is not: overriding
    --max_iters on a config file must not leave that file's schedule length behind."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    defaults = {name: f.default for name, f in fields.items()}
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    parser.add_argument("config_files", nargs="*", help="config files (Python) applied in order")
    for name, field in fields.items():
        rule = field.metadata.get("rule")
        rule = f", {describe(rule)}" if rule else ""
        parser.add_argument(f"--{name}", default=argparse.SUPPRESS,
                            metavar=_type_of(field).__name__.upper(),
                            help=f"{field.metadata.get('help', '')}{rule} (default: "
                                 f"{defaults[name]!r})")
    aliases = getattr(config_class, "ALIASES", {})  # an older name -> the setting's name now
    for old, new in aliases.items():
        parser.add_argument(f"--{old}", dest=new, default=argparse.SUPPRESS, metavar="...",
                            help=f"the older name of --{new}")
    args, unknown = parser.parse_known_args(argv)
    for arg in unknown:
        key = arg.lstrip("-").split("=")[0]
        if arg.startswith("-"):
            raise UserError(f"unknown option --{key}{_closest(key, list(fields))}")
        raise UserError(f"unexpected argument '{arg}'")

    values = {}
    for path in args.config_files:
        for key, value in read_config_file(path).items():
            key = aliases.get(key, key)
            if key not in fields:
                raise UserError(f"unknown key '{key}' in {path}{_closest(key, list(fields))}")
            values[key] = value
    cli = {k: convert(v, _type_of(fields[k]), k) for k, v in vars(args).items()
           if k != "config_files"}
    for follower, leader in getattr(config_class, "FOLLOWS", {}).items():
        if leader in cli and follower not in cli and follower in values:
            print(f"note: {follower} follows --{leader} (the config file's {values[follower]} is "
                  "not used)")
            del values[follower]
    values.update(cli)
    for key, value in values.items():
        expected = _type_of(fields[key])
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise UserError(f"'{key}' must be {expected.__name__}, got {value!r}")
    return config_class(**values)  # the dataclass checks itself (check_settings in __post_init__)
