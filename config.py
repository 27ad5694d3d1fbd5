"""
Configuration for the scripts, and how they report mistakes.

A run's settings are a dataclass of defaults (see TrainConfig in train.py). They can be changed, in this order
of precedence, by:
  1. a config file: plain Python that assigns values, e.g. configs/shakespeare.py
  2. the command line: --key=value or --key value (typed from the default)
An unknown key, in a file or on the command line, is an error that names the closest valid key.
"""

import argparse
import dataclasses
import difflib
import sys
from pathlib import Path


class UserError(Exception):
    """A mistake the user can fix (missing file, bad key, no network...). Scripts print it as one line."""


def run_main(main):
    """Run a script's main(); a UserError becomes one line on stderr and exit code 1, with no traceback."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # e.g. during a download: the partial file is kept and resumed next time
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _closest(key, valid):
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _parse_bool(text):
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def _type_of(field):
    """The type a command-line string is converted to: the field's annotated type (bool parsed by name)."""
    t = field.type if not isinstance(field.type, str) else {"int": int, "float": float, "bool": bool, "str": str}[field.type]
    return _parse_bool if t is bool else t


def read_config_file(path):
    """Run a config file and return the names it assigned (modules and _private names are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} not found")
    namespace = {}
    try:
        exec(compile(path.read_text(), str(path), "exec"), namespace)
    except Exception as e:  # a syntax error or failing expression in the user's file
        raise UserError(f"config file {path} failed: {type(e).__name__}: {e}") from None
    return {k: v for k, v in namespace.items() if not k.startswith("_") and not hasattr(v, "__spec__")}


def parse_config(config_class, argv=None, description=None):
    """Build a config_class instance from defaults, optional config files and --key=value overrides."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    defaults = config_class()
    parser = argparse.ArgumentParser(
        description=description,
        allow_abbrev=False,  # --lr must not silently mean --lr_decay_iters
    )
    parser.add_argument("config_files", nargs="*", help="config files (Python) applied in order")
    for name, field in fields.items():
        parser.add_argument(
            f"--{name}",
            type=_type_of(field),
            default=argparse.SUPPRESS,  # absent keys are not returned, so files are not overridden by defaults
            metavar=type(getattr(defaults, name)).__name__.upper(),
            help=f"{field.metadata.get('help', '')} (default: {getattr(defaults, name)!r})",
        )
    args, unknown = parser.parse_known_args(argv)
    for arg in unknown:
        key = arg.lstrip("-").split("=")[0]
        if arg.startswith("-"):
            raise UserError(f"unknown option --{key}{_closest(key, list(fields))}")
        raise UserError(f"unexpected argument '{arg}'")

    values = {}
    for path in args.config_files:
        for key, value in read_config_file(path).items():
            if key not in fields:
                raise UserError(f"unknown key '{key}' in {path}{_closest(key, list(fields))}")
            values[key] = value
    cli = {k: v for k, v in vars(args).items() if k != "config_files"}
    values.update(cli)
    for key, value in values.items():
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected):
            raise UserError(f"'{key}' must be {expected.__name__}, got {value!r}")
        values[key] = value
    return dataclasses.replace(defaults, **values)
