"""
Settings: how a script's settings are declared, read and checked, and how scripts report mistakes.

A script's settings are a dataclass whose fields are declared with `setting(help, default, rule)`
(TrainConfig in train.py, SampleSettings in sample.py, ...). They come, in this order of
precedence, from:
  1. the defaults;
  2. config files: plain Python that assigns values, e.g. configs/shakespeare.py;
  3. the command line: --key=value or --key value, converted to the default's type. A bool
     setting alone (--compile) means true; a tuple setting takes several values (--text A B, or
     --text A --text B). Positional arguments are config files, unless the settings class names
     the settings that take them in POSITIONAL (evaluate.py's checkpoint, plot.py's runs).
Every value is then checked against its rule ("> 0", "[0, 1)", a tuple of choices, "required")
and must be finite, whether it came from a file, the command line or Python code (the dataclass
checks itself on creation). Every mistake is one line: an unknown key names the closest valid one,
and nothing prints argparse's usage message.
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


def setting(help, default, rule=None, bare=None):
    """A dataclass field with its help text and an optional rule: "> 0", ">= 1", "[0, 1)", "(0, 1]"
    (intervals, brackets inclusive), a tuple of allowed values, or "required" (not empty).

    The default's type is the setting's: bool, int, float, str, or tuple (of strings: a setting
    that takes several values, e.g. sample.py's --text; a choice rule applies to each). A bool given
    bare (--compile) is true; a str setting with `bare` may be given bare too, meaning that value
    (evaluate.py's --hellaswag, or --hellaswag=FILE)."""
    return dataclasses.field(default=default, metadata={"help": help, "rule": rule, "bare": bare})


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


def satisfies(value, rule):
    """Does value satisfy rule (see setting)? A tuple value satisfies a choice rule when each of
    its items does."""
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
    """value as a setting `name` of type expected that satisfies rule, or a UserError. An integer
    where a float is expected becomes a float, a list where a tuple is expected a tuple. The one
    check of every setting (check_settings), and of the Python APIs that share a setting's rule
    (sample.check_sampling)."""
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

BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
              "0": False, "false": False, "no": False, "off": False}


def did_you_mean(key, valid):
    """' (did you mean 'x'?)': the closest of the valid names, however far."""
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.0)
    return f" (did you mean '{match[0]}'?)" if match else ""


def usage_error(message):
    """A mistake on the command line: one line and exit status 2 (the convention for usage
    errors), not argparse's usage message."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def convert(text, expected, key):
    """A command-line string (a list of them for a tuple) as the setting's type; a wrong one stops
    with one line (usage_error)."""
    if expected is tuple:
        return tuple(text)
    try:
        if expected is bool:
            return BOOL_WORDS[text.lower()]
        return expected(text)
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


def _parser(config_class, fields, positional, description, prog):
    """The argparse parser of a settings class: every value is read as a string (or a list of
    them), with no default, so that what the command line gave is told apart from the rest."""
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
    for name, field in fields.items():
        if name in (positional or ()):
            continue
        kind = _type_of(field)
        several = dict(nargs="+", action="extend") if kind is tuple else {}
        parser.add_argument(f"--{name}", default=argparse.SUPPRESS, metavar=metavars[kind],
                            help=_help(field), **several)
    return parser


def _bare_flags(argv, flags, bare):
    """The command line with each bare --flag of a bool setting written --flag=true. The next
    argument is the flag's value only if it reads as one (true, false, 1, 0, yes, no, on, off):
    `--force gpt2` is --force=true and then gpt2. A bare --flag of a str setting with a bare value
    (bare: {flag: value}) is that value when no value follows it (the end, or another option)."""
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
    take them (a tuple setting takes all of them). A setting listed in config_class.FOLLOWS (e.g.
    lr_decay_iters follows max_iters) goes back to its default when the setting it follows is given
    on the command line and it is not: overriding --max_iters on a config file must not leave that
    file's schedule length behind."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    positional = getattr(config_class, "POSITIONAL", None)
    parser = _parser(config_class, fields, positional, description, prog)
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
