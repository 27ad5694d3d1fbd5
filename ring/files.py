"""
What a command reads and writes besides a training run: the text and JSON files it is given
(read_text, parse_json, read_json: the right shape or one line), and its outputs, checked before
any work is done (check_output_file, check_output_dir) and written atomically (write_file, and
checkpoint.write_directory for a directory). The rule, train.py's for its run directory: nothing is
replaced that the command did not create. An output must be new, or an earlier output of the same
command (which ours(path) recognises by a mark the command writes into it), and that only with
--force; never the command's input, a run directory or its files, nor anything in a checkpoint.
"""

import json
import os
from pathlib import Path

from ring.config import UserError
from ring.rundir import RUN_FILES, enclosing_checkpoint, holds_run


def check_output_file(path, ours, force, inputs=(), flag="--out"):
    """Refuse, in one line, to write the file path over anything the command did not create (see
    the module's rule); ours(path) says whether an existing file is an earlier output of the same
    command, which force allows to be replaced."""
    path = Path(path)
    _refuse_protected(path, inputs, flag)
    if path.is_dir():
        raise UserError(f"{path} is a directory; {flag} takes the name of a file")
    if path.exists():
        _replace_ours(path, ours, force, flag, "was not written by this command; choose another "
                                               f"{flag} (nothing was changed)")


def check_output_dir(path, ours, force, inputs=(), flag="--out_dir"):
    """As check_output_file, for a directory: it must not be, contain, or lie inside a checkpoint
    or run directory (it may be a checkpoint that ours() recognises, such as an earlier import)."""
    path = Path(path)
    _refuse_protected(path, inputs, flag)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a directory; choose another {flag}")
    if not path.is_dir() or not any(path.iterdir()):
        return
    if holds_run(path) or any(holds_run(p) for p in path.iterdir() if p.is_dir()):
        raise UserError(f"{path} holds a training run; choose another {flag} (nothing was changed)")
    shown = ", ".join(sorted(p.name for p in path.iterdir())[:5])
    _replace_ours(path, ours, force, flag, f"holds files this command did not write ({shown}); "
                                           f"choose another {flag}")


def _replace_ours(path, ours, force, flag, not_ours):
    """An existing path is replaced only if ours(path) says it is ours, and with force."""
    if not ours(path):
        raise UserError(f"{path} already exists and {not_ours}")
    if not force:
        raise UserError(f"{path} already exists; choose another {flag}, or pass --force to "
                        "replace it")


def _refuse_protected(path, inputs, flag):
    """What no output may be, whatever it holds: inside a checkpoint, a run directory's own file,
    or one of the command's inputs."""
    inside = enclosing_checkpoint(path)
    if inside is not None and inside != path.resolve():
        raise UserError(f"{path} lies inside the checkpoint {inside}; choose an {flag} outside it")
    if path.name in (*RUN_FILES, ".lock") and holds_run(path.parent):
        raise UserError(f"{path} belongs to the run in {path.parent}; choose another {flag}")
    for given in inputs:
        if given and path.resolve() == Path(given).resolve():
            raise UserError(f"{path} is this command's input {given}; choose another {flag} "
                            "(nothing was changed)")


def write_file(path, fill, binary=False):
    """Create (or replace) the file path atomically: fill(f) writes a temporary file beside it,
    which is then renamed over path. If anything fails, path is as it was and the temporary file
    is gone; an OS error is one line. Text files are UTF-8, with newlines as written (csv)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") if binary else open(tmp, "w", newline="", encoding="utf-8") as f:
            fill(f)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
        raise


# --------------------------------------------------------------------------------------------------
# Reading what a user (or a download) gives


def read_text(path, what=""):
    """A UTF-8 text file's contents, or one line naming it (what: "--file", ...) and why not:
    missing, unreadable, not UTF-8 (where). Every text a user gives a script is read here."""
    named = f"{what} {path}" if what else str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{named} not found") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{named} is not UTF-8 text (byte {e.start}); convert it to UTF-8 "
                        "first") from None
    except OSError as e:
        raise UserError(f"cannot read {named} ({e.strerror})") from None


def parse_json(text, where, kind=dict):
    """The JSON value in text, which must be of type kind (a dict, a list...), or a UserError that
    names where it came from. The one JSON parser of the project: a value nested too deeply for
    Python (RecursionError) is malformed JSON like any other."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        reason = e.args[0] if isinstance(e, ValueError) else "nested too deeply"
        raise UserError(f"{where} is not valid JSON ({reason})") from None
    if not isinstance(value, kind):
        raise UserError(f"{where} is not a JSON {'object' if kind is dict else 'array'}")
    return value


def read_json(path, kind=dict, max_bytes=64 << 20):
    """parse_json of a file of at most max_bytes (a bound: a config or a manifest is small)."""
    path = Path(path)
    try:
        if path.stat().st_size > max_bytes:
            raise UserError(f"{path} is larger than {max_bytes >> 20} MiB: not the file expected")
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror})") from None
    return parse_json(read_text(path), path, kind)
