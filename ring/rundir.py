"""
The run directory (out_dir) of a training run, the rules that keep it safe (RunDirectory), and what
a run prints as it goes (Progress) and at its end (report_end).

    out/run/
        last/            the latest checkpoint, with what resuming needs (checkpoint.py)
        best/            the best one by validation: weights and config only
        metrics.jsonl    one JSON object per logged step or evaluation: the run's record
        tensorboard/     the same numbers as TensorBoard events, with --tensorboard=True
        .lock            who is writing here, while a run does (one writer at a time)
"""

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from ring.config import UserError

RUN_FILES = ("last", "best", ".last.old", ".best.old", ".last.tmp", ".best.tmp", "metrics.jsonl",
             "tensorboard")


def is_checkpoint(path):
    """A checkpoint directory of ours: its config.json has a "model" section (an HF one has not)."""
    try:
        return isinstance(json.loads((Path(path) / "config.json").read_text()).get("model"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def holds_run(path):
    path = Path(path)
    return (path / "metrics.jsonl").is_file() or any(
        is_checkpoint(path / name) for name in ("last", "best", ".last.old", ".best.old"))


def enclosing_checkpoint(path):
    for parent in (Path(path).resolve(), *Path(path).resolve().parents):
        if is_checkpoint(parent):
            return parent
    return None


def take_lock(path, holder, advice):
    """An exclusive lock on the directory path, which the OS releases however the process ends
    (kill -9 included): no stale lock. path/.lock names the holder for a second process's one line.
    Returns what release_lock takes (None where there is no flock: Windows)."""
    try:
        import fcntl
    except ImportError:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError, UnicodeDecodeError):
            holder += f", {(Path(path) / '.lock').read_text()[:200].strip()}"
        raise UserError(f"{path} is in use by {holder}; wait for it to {advice}") from None
    (Path(path) / ".lock").write_text(f"pid {os.getpid()} on {socket.gethostname()} since "
                                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
    return fd


def release_lock(path, fd):
    (Path(path) / ".lock").unlink(missing_ok=True)
    if fd is not None:
        os.close(fd)  # releases the lock


class RunDirectory:
    """out_dir while a run writes to it: the lock, the checks, metrics.jsonl and TensorBoard.
    open() checks and locks it before any data is prepared or model built; start() replaces an
    earlier run (--overwrite) once all else is checked, so a mistyped dataset never costs it."""

    def __init__(self, path, resume=False, overwrite=False, tensorboard=False, is_main=True):
        self.path, self.resume, self.overwrite = Path(path), resume, overwrite
        self.tensorboard, self.is_main = tensorboard, is_main
        self._lock = self._writer = None
        self._created = False  # out_dir did not exist: removed again if the run writes nothing

    def open(self):
        if not self.is_main:
            return self
        inside = enclosing_checkpoint(self.path)
        if inside is not None:
            raise UserError(f"out_dir {self.path} is inside the checkpoint {inside}; choose "
                            "another one")
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"out_dir {self.path} is a file, not a directory; choose another one")
        try:
            self._created = not self.path.exists()
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = take_lock(self.path, "another run", "finish or choose another --out_dir")
        except OSError as e:
            raise UserError(f"cannot write to out_dir {self.path}: {e.strerror}") from None
        if not self.resume and holds_run(self.path) and not self.overwrite:
            raise UserError(f"{self.path} already holds a run; continue it with "
                            "--init_from=resume, choose another --out_dir, or start over with "
                            "--overwrite=True")
        return self

    def start(self):
        """Begin writing, once the data and the model are ready: with --overwrite, remove the
        earlier run's own files (nothing else in out_dir), then open TensorBoard."""
        if not self.is_main:
            return
        if not self.resume and self.overwrite and holds_run(self.path):
            from ring.checkpoint import remove  # here: checkpoint.py (via files.py) imports us
            for name in RUN_FILES:
                remove(self.path / name)
        self._created = False  # the run's files go here now
        if self.tensorboard:
            self._open_tensorboard()

    def _open_tensorboard(self, purge_step=None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard=True needs the tensorboard package (pip install "
                            "tensorboard)") from None
        self._writer = SummaryWriter(str(self.path / "tensorboard"), purge_step=purge_step)

    def log_position(self):
        """Where metrics.jsonl ends now: stored in each resumable checkpoint, for continue_log."""
        path = self.path / "metrics.jsonl"
        return {"log_bytes": path.stat().st_size if path.is_file() else 0}

    def continue_log(self, saved, iter_num):
        """On resume: drop what metrics.jsonl (and TensorBoard) got after the checkpoint was saved,
        so every iteration is logged once; a log shorter than then is refused (rows were lost)."""
        if not self.is_main:
            return
        path, size = self.path / "metrics.jsonl", saved["log_bytes"]
        if self.log_position()["log_bytes"] < size:
            raise UserError(f"{path} is shorter than when {self.path / 'last'} was saved (cut or "
                            "replaced since); put the original back, or move it away to resume "
                            "with a new log")
        if size:
            os.truncate(path, size)
        elif path.is_file():
            path.unlink()
        if self.tensorboard:
            self._writer.close()
            self._open_tensorboard(purge_step=iter_num + 1)

    def log(self, row):  # to metrics.jsonl, and its numbers to TensorBoard
        if not self.is_main:
            return
        path = self.path / "metrics.jsonl"
        try:
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror}") from None
        if self._writer is not None:
            for key, value in row.items():
                if key != "iter" and _is_number(value):
                    self._writer.add_scalar(key, value, row["iter"])
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
        if self._lock is not None:
            release_lock(self.path, self._lock)
            self._lock = None
            if self._created and not any(self.path.iterdir()):
                self.path.rmdir()  # a run that stopped before writing leaves no empty out_dir

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------------
# What a run prints: progress lines, and where it ended


class Progress:
    """Every log_interval steps: the mean loss over the step's batch and all processes, the learning
    rate, ms per step, tokens/s, MFU (the model's FLOPs per second over the device's peak) and the
    time left, printed and logged. It is given plain numbers."""

    def __init__(self, run_dir, is_main, flops_per_token, peak_flops):
        self.run_dir, self.is_main = run_dir, is_main
        self.flops_per_token, self.peak = flops_per_token, peak_flops
        self.restart(0, 0)

    def restart(self, iter_num, tokens):
        """Time the steps from here (after an evaluation: evaluations are not steps)."""
        self.start, self.iter_num, self.tokens = time.time(), iter_num, tokens

    def report(self, iter_num, loss, grad_norm, lr, tokens, steps_left, evaluation_seconds_left):
        elapsed = time.time() - self.start
        ms = 1000 * elapsed / max(iter_num - self.iter_num, 1)
        tokens_per_s = (tokens - self.tokens) / elapsed
        eta = steps_left * ms / 1000 + evaluation_seconds_left
        row = {"iter": iter_num, "loss": loss, "lr": lr, "grad_norm": grad_norm,
               "ms_per_iter": ms, "tokens_per_s": tokens_per_s}
        if self.peak:
            row["mfu"] = self.flops_per_token * tokens_per_s / self.peak
        self.run_dir.log(row)
        mfu = f" | mfu {100 * row['mfu']:.1f}%" if self.peak else ""
        if self.is_main:
            print(f"iter {iter_num}: loss {loss:.4f} | lr {lr:.2e} | {ms:.1f} ms/iter | "
                  f"{tokens_per_s:,.0f} tok/s{mfu} | eta {duration(eta)}", flush=True)
        self.restart(iter_num, tokens)


def last_evaluation(evaluated_at, metrics):
    """'; its last evaluation, at iter N: val_loss ...', or ''."""
    return f"; its last evaluation, at iter {evaluated_at}: {summary(metrics)}" if metrics else ""


def report_end(is_main, last, iter_num, stopped_by, evaluated_at, metrics):
    """The last line says where the run stopped and which evaluation its numbers come from."""
    if not is_main:
        return
    how = f"stopped by {stopped_by}" if stopped_by else "done"
    evaluated = last_evaluation(evaluated_at, metrics) or "; not evaluated yet"
    print(f"{how} at iter {iter_num}; saved {last}{evaluated}", flush=True)
    if stopped_by:
        print("continue with --init_from=resume and the same settings", flush=True)


def summary(metrics):
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in metrics.items() if _is_number(v))


def duration(seconds):
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
