"""
Settings: how a script's settings are declared (a dataclass of `setting(help, default, rule)`
fields, e.g. train.TrainConfig), read (parse_config: the defaults, then config files, plain Python
such as configs/shakespeare.py, then the command line) and checked (type, rule, finite, wherever a
value came from), and how scripts report mistakes: one line (UserError, run_main), never argparse's
usage message; an unknown key names the closest valid one.
"""

import argparse
import dataclasses
import difflib
import math
import os
import sys
from pathlib import Path


class UserError(Exception):
    """A mistake the user can fix (missing file, bad setting, no network...): one line, status 1."""


def run_main(main):
    """Run a script's main(); a UserError becomes one line on stderr and exit status 1, printed by
    rank 0 only (under torchrun every process would print it)."""
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


def setting(help, default, rule=None, bare=None):
    """A dataclass field with its help text and an optional rule: "> 0", ">= 1", "[0, 1)", "(0, 1]"
    (brackets inclusive), a tuple of allowed values, or "required" (not empty). The default's type
    is the setting's: bool, int, float, str, or tuple (of strings: --text A B, or --text A --text
    B). A bool given bare (--compile) is true; a str setting given bare means `bare` (evaluate.py's
    --hellaswag, or --hellaswag=FILE)."""
    return dataclasses.field(default=default, metadata={"help": help, "rule": rule, "bare": bare})


def with_defaults(cls, defaults, helps=None):
    """A subclass of the settings dataclass cls with other defaults (and, in helps, other help
    texts), the same rules: finetune.py's settings are train.py's this way."""
    helps, fields = helps or {}, dataclasses.fields(cls)
    unknown = set(defaults) - {f.name for f in fields}
    assert not unknown, f"no such settings: {unknown}"
    namespace = {"__module__": cls.__module__, "__doc__": cls.__doc__, "__annotations__": {}}
    for f in fields:
        if f.name in defaults or f.name in helps:
            namespace["__annotations__"][f.name] = f.type
            metadata = {**f.metadata, "help": helps.get(f.name, f.metadata["help"])}
            namespace[f.name] = dataclasses.field(default=defaults.get(f.name, f.default),
                                                  metadata=metadata)
    return dataclasses.dataclass(type(cls.__name__, (cls,), namespace))


def satisfies(value, rule):
    """Does value (a tuple: each of its items) satisfy rule (see setting)?"""
    if rule is None:
        return True
    if rule == "required":
        return bool(value)
    if isinstance(rule, tuple):
        return all(v in rule for v in value) if isinstance(value, tuple) else value in rule
    if rule[0] in "[(":  # an interval: "[0, 1)"
        low, high = (_number(bound) for bound in rule[1:-1].split(","))
        above = value >= low if rule[0] == "[" else value > low
        return above and (value <= high if rule[-1] == "]" else value < high)
    op, bound = rule.split()  # a comparison: ">= 1"
    return {">=": value >= _number(bound), ">": value > _number(bound)}[op]


def _number(text):
    """A rule's bound: an integer stays one, so that 2**63 is not within [0, 2**63 - 1] (a float
    rounds that bound up to 2**63)."""
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else float(text)


def describe(rule):
    if rule == "required":
        return "given"
    if isinstance(rule, tuple):
        return "one of " + ", ".join(str(v) if v != "" else "''" for v in rule)
    return f"in {rule}" if rule[0] in "[(" else rule


def check_value(name, value, expected, rule=None, help=""):
    """value as a setting `name` of type expected that satisfies rule, or a UserError (an int
    becomes a float, a list a tuple). The one check of every setting, and of the Python APIs that
    share a setting's rule (sample.check_sampling)."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is tuple and isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise UserError(f"{name} must be {expected.__name__}, not {value!r}")
    if expected is tuple and not all(isinstance(v, str) for v in value):
        raise UserError(f"{name} must hold strings, not {value!r}")
    if expected is float and not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, not {value}")
    if not satisfies(value, rule):
        if rule == "required":
            raise UserError(f"{name} is missing" + (f": {help}" if help else ""))
        raise UserError(f"{name} must be {describe(rule)}, not {value!r}")
    return value


def check_settings(cfg):
    """Check every field of a settings dataclass: type, finiteness and rule (else a UserError)."""
    for field in dataclasses.fields(cfg):
        value = check_value(field.name, getattr(cfg, field.name), _type_of(field),
                            field.metadata.get("rule"), field.metadata.get("help", ""))
        setattr(cfg, field.name, value)


def _type_of(field):
    names = {"int": int, "float": float, "bool": bool, "str": str, "tuple": tuple}
    return names[field.type] if isinstance(field.type, str) else field.type


# --------------------------------------------------------------------------------------------------
# Reading settings

BOOL_WORDS = {**dict.fromkeys(("1", "true", "yes", "on"), True),
              **dict.fromkeys(("0", "false", "no", "off"), False)}


def did_you_mean(key, valid):
    """' (did you mean 'x'?)': the closest of the valid names, however far."""
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.0)
    return f" (did you mean '{match[0]}'?)" if match else ""


def usage_error(message):
    """A mistake on the command line: one line and exit status 2 (usage errors' convention)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def convert(text, expected, key):
    """A command-line string (a list of them for a tuple) as the setting's type, or usage_error."""
    if expected is tuple:
        return tuple(text)
    try:
        return BOOL_WORDS[text.lower()] if expected is bool else expected(text)
    except (KeyError, ValueError):
        kinds = {bool: "true or false", int: "an integer", float: "a number"}
        usage_error(f"--{key} must be {kinds.get(expected, 'a string')}, not '{text}'")


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


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # e.g. "argument --out_dir: expected one argument"
        usage_error(message)


def _help(field):
    """A setting's line in --help: what it is, its rule and its default."""
    rule, text = field.metadata.get("rule"), field.metadata.get("help", "")
    if rule == "required":
        return f"{text} (required)"
    rule = f", {describe(rule)}" if rule else ""
    default = field.default
    shown = (" ".join(default) or "none") if isinstance(default, tuple) else repr(default)
    return f"{text}{rule} (default: {shown})"


def _parser(fields, positional, description, prog):
    """The argparse parser of a settings class: every value a string (or a list of them), with no
    default, so that what the command line gave is told apart from the rest."""
    epilog = ("--key=value and --key value both work; a true/false setting alone (--compile)\n"
              "means true; one shown as STR [STR ...] takes several values: --key A B, or\n"
              "--key A --key B.")
    parser = _Parser(prog=prog, description=description, epilog=epilog, allow_abbrev=False,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if positional is None:
        parser.add_argument("config_files", nargs="*", default=[],
                            help="config files (Python) applied in order")
    for name in positional or ():
        several = _type_of(fields[name]) is tuple
        parser.add_argument(name, nargs="*" if several else "?", default=argparse.SUPPRESS,
                            metavar=name.upper(), help=_help(fields[name]))
    metavars = {bool: "BOOL", int: "INT", float: "FLOAT", str: "STR", tuple: "STR"}
    options = {name: f for name, f in fields.items() if name not in (positional or ())}
    for name, field in options.items():
        kind = _type_of(field)
        several = dict(nargs="+", action="extend") if kind is tuple else {}
        parser.add_argument(f"--{name}", default=argparse.SUPPRESS, metavar=metavars[kind],
                            help=_help(field), **several)
    return parser


def _bare_flags(argv, flags, bare):
    """The command line with each bare --flag of a bool setting written --flag=true: the next
    argument is its value only if it reads as one (`--force gpt2` is --force=true, then gpt2). A
    str setting's flag in bare ({flag: value}) takes that value when no value follows it."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":  # what follows are positional arguments
            return out + argv[i:]
        following = argv[i + 1] if i + 1 < len(argv) else None
        if arg in flags and (following is None or following.lower() not in BOOL_WORDS):
            arg += "=true"
        elif arg in bare and (following is None or following.startswith("-")):
            arg += f"={bare[arg]}"
        out.append(arg)
    return out


def parse_config(config_class, argv=None, description=None, prog=None):
    """A config_class instance from its defaults, config files and --key=value overrides, checked.

    Positional arguments are config files, unless config_class.POSITIONAL names the settings that
    take them (evaluate.py's checkpoint; a tuple setting takes all of them). A setting in
    config_class.FOLLOWS (lr_decay_iters follows max_iters) goes back to its default when the one
    it follows is given on the command line and it is not: overriding --max_iters on a config file
    must not leave that file's schedule length behind."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    positional = getattr(config_class, "POSITIONAL", None)
    parser = _parser(fields, positional, description, prog)
    flags = {f"--{name}" for name, f in fields.items() if _type_of(f) is bool}
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    bare = {f"--{name}": f.metadata["bare"] for name, f in fields.items()
            if f.metadata.get("bare") is not None}
    args, unknown = parser.parse_known_intermixed_args(_bare_flags(argv, flags, bare))
    for arg in sorted(unknown, key=lambda a: not a.startswith("-")):  # options first
        key = arg.lstrip("-").split("=")[0]
        if arg.startswith("-"):
            raise UserError(f"unknown option --{key}{did_you_mean(key, fields)}")
        raise UserError(f"unexpected argument '{arg}'")
    values = {}
    for path in getattr(args, "config_files", []):
        for key, value in read_config_file(path).items():
            if key not in fields:
                raise UserError(f"unknown key '{key}' in {path}{did_you_mean(key, fields)}")
            values[key] = value
    cli = {k: convert(v, _type_of(fields[k]), k) for k, v in vars(args).items()
           if k != "config_files"}
    for follower, leader in getattr(config_class, "FOLLOWS", {}).items():
        if leader in cli and follower not in cli and follower in values:
            print(f"note: {follower} follows --{leader} (the config file's {values[follower]} is "
                  "not used)")
            del values[follower]
    values.update(cli)
    for key, value in values.items():  # the type now; the rules when the dataclass is made
        values[key] = check_value(key, value, _type_of(fields[key]))
    return config_class(**values)  # the dataclass checks itself (check_settings in __post_init__)
