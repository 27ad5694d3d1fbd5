"""
The run directory (out_dir) of a training run, and the rules that keep it safe.

    out/run/
        last/            the latest checkpoint, with what resuming needs (checkpoint.py)
        best/            the best one by validation: weights and config only
        metrics.jsonl    one JSON object per logged step or evaluation: the run's record
        tensorboard/     the same numbers as TensorBoard events, with --tensorboard=True
        .lock            who is writing here, while a run does

It also prints what a run reports as it goes (Progress) and at its end (report_end).

The rules: one writer at a time (a second run on the same out_dir is refused, naming the first); a
new run never replaces a run it did not make unless told to (--overwrite=True); a resumed run
continues metrics.jsonl where its checkpoint was saved, so every iteration is logged once; nothing
is written inside a checkpoint; OS errors are one line naming the path. Only rank 0 touches the
directory.
"""

import json
import os
import socket
import time
from pathlib import Path

from ring.config import UserError
from ring.runtime import mean_over_ranks, peak_flops, print0

RUN_FILES = ("last", "best", ".last.old", ".best.old", ".last.tmp", ".best.tmp", "metrics.jsonl",
             "tensorboard")


def is_checkpoint(path):
    """A checkpoint directory of ours: its config.json has a "model" section (an HF one has not)."""
    try:
        return isinstance(json.loads((Path(path) / "config.json").read_text()).get("model"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def holds_run(path):
    """Does path hold a training run: a last/ or best/ checkpoint, or a metrics.jsonl?"""
    path = Path(path)
    return (path / "metrics.jsonl").is_file() or any(
        is_checkpoint(path / name) for name in ("last", "best", ".last.old", ".best.old"))


def enclosing_checkpoint(path):
    """The checkpoint directory that path is or lies inside, or None."""
    for parent in (Path(path).resolve(), *Path(path).resolve().parents):
        if is_checkpoint(parent):
            return parent
    return None


def check_output_dir(path, ours, force):
    """Refuse to write a command's output directory over anything the command did not create.

    path must not be, contain, or lie inside a checkpoint or run directory; if it exists and is not
    empty, ours(path) must say it holds an earlier output of the same command, and force must be set
    to replace it. Every refusal is one line."""
    path = Path(path)
    inside = enclosing_checkpoint(path)
    if inside is not None and inside != path.resolve():
        raise UserError(f"{path} lies inside the checkpoint {inside}; choose an --out_dir outside "
                        "it")
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a directory; choose another --out_dir")
    if not path.is_dir() or not any(path.iterdir()):
        return
    if holds_run(path) or any(holds_run(p) for p in path.iterdir() if p.is_dir()):
        raise UserError(f"{path} holds a training run; choose another --out_dir (nothing was "
                        "changed)")
    if not ours(path):
        shown = ", ".join(sorted(p.name for p in path.iterdir())[:5])
        raise UserError(f"{path} already exists and holds files this command did not write "
                        f"({shown}); choose another --out_dir")
    if not force:
        raise UserError(f"{path} already exists; choose another --out_dir, or pass --force to "
                        "replace it")


class RunDirectory:
    """out_dir while a run writes to it: the lock, the checks, metrics.jsonl and TensorBoard."""

    def __init__(self, path, resume=False, overwrite=False, tensorboard=False, is_main=True):
        self.path = Path(path)
        self.resume, self.overwrite, self.tensorboard = resume, overwrite, tensorboard
        self.is_main = is_main
        self._lock = self._writer = None

    def open(self):
        """Check the directory and take it, before any data is prepared or model built."""
        if not self.is_main:
            return self
        inside = enclosing_checkpoint(self.path)
        if inside is not None:
            raise UserError(f"out_dir {self.path} is inside the checkpoint {inside}; choose "
                            "another one")
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"out_dir {self.path} is a file, not a directory; choose another one")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            (self.path / ".lock").write_text(f"pid {os.getpid()} on {socket.gethostname()} since "
                                             f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
        except OSError as e:
            raise UserError(f"cannot write to out_dir {self.path}: {e.strerror}") from None
        if not self.resume and holds_run(self.path):
            if not self.overwrite:
                raise UserError(f"{self.path} already holds a run; continue it with "
                                "--init_from=resume, choose another --out_dir, or start over with "
                                "--overwrite=True")
            from ring.checkpoint import remove  # only the files a run writes, nothing else in out_dir

            for name in RUN_FILES:
                remove(self.path / name)
        if self.tensorboard:
            self._open_tensorboard()
        return self

    def _take_lock(self):
        """An exclusive lock on the directory itself, which the OS releases when the process ends,
        however it ends (kill -9 included): no stale lock to clean up. .lock says who holds it, for
        the message."""
        try:
            import fcntl  # POSIX; on Windows runs are not locked
        except ImportError:
            return
        self._lock = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock)
            self._lock = None
            try:
                holder = (self.path / ".lock").read_text().strip()
            except OSError:
                holder = "another process"
            raise UserError(f"{self.path} is in use by another run ({holder}); wait for it to "
                            "finish or choose another --out_dir") from None

    def _open_tensorboard(self, purge_step=None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard=True needs the tensorboard package (pip install "
                            "tensorboard)") from None
        self._writer = SummaryWriter(str(self.path / "tensorboard"), purge_step=purge_step)

    def continue_log(self, log_bytes, iter_num):
        """On resume: drop what metrics.jsonl (and TensorBoard) got after the checkpoint was saved,
        so every iteration is logged once. log_bytes is the file's size at that save (None for
        checkpoints written before it was recorded: then rows after iter_num are dropped)."""
        if not self.is_main:
            return
        path = self.path / "metrics.jsonl"
        if path.is_file():
            if log_bytes is not None and path.stat().st_size >= log_bytes:
                os.truncate(path, log_bytes)
            else:
                rows = [line for line in path.read_text().splitlines()
                        if line.strip() and json.loads(line).get("iter", 0) <= iter_num]
                path.write_text("".join(row + "\n" for row in rows))
        if self.tensorboard:
            self._writer.close()
            self._open_tensorboard(purge_step=iter_num + 1)

    def log_bytes(self):
        """The size of metrics.jsonl now: stored in each checkpoint, for continue_log."""
        path = self.path / "metrics.jsonl"
        return path.stat().st_size if path.is_file() else 0

    def log(self, row):
        """Append one row to metrics.jsonl (and its numbers to TensorBoard)."""
        if not self.is_main:
            return
        try:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            raise UserError(f"cannot write {self.path / 'metrics.jsonl'}: {e.strerror}") from None
        if self._writer is not None:
            for key, value in row.items():
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if key != "iter" and number:
                    self._writer.add_scalar(key, value, row["iter"])
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
        if self._lock is not None:
            (self.path / ".lock").unlink(missing_ok=True)
            os.close(self._lock)  # releases the lock
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------------------------------
# What a run prints: progress lines, and where it ended


class Progress:
    """Every log_interval steps: the mean loss over the step's batch and all processes, the learning
    rate, ms per step, tokens/s, MFU and the time left, printed and logged."""

    def __init__(self, t):
        self.t, self.peak = t, t.cfg.peak_flops or peak_flops(t.rt)
        self.restart()

    def restart(self):
        self.start, self.steps, self.tokens = time.time(), 0, self.t.objective.tokens

    def tick(self, loss, grad_norm, lr):
        t, cfg = self.t, self.t.cfg
        self.steps += 1
        it = t.state.iter_num
        if it % cfg.log_interval and it != cfg.max_iters:
            return
        loss = mean_over_ranks(t.rt, loss).item()  # waits for the device: timings below are real
        elapsed = time.time() - self.start
        ms = 1000 * elapsed / self.steps
        tokens_per_s = (t.objective.tokens - self.tokens) / elapsed
        evals_left = (cfg.max_iters // cfg.eval_interval - it // cfg.eval_interval
                      + t.objective.evaluations_left(it, cfg.max_iters) + 1)
        eta = (cfg.max_iters - it) * ms / 1000 + evals_left * t.eval_seconds
        row = {"iter": it, "loss": loss, "lr": lr, "grad_norm": grad_norm.item(), "ms_per_iter": ms,
               "tokens_per_s": tokens_per_s}
        if self.peak:
            row["mfu"] = t.raw.flops_per_token() * tokens_per_s / self.peak
        t.run_dir.log(row)
        mfu = f" | mfu {100 * row['mfu']:.1f}%" if self.peak else ""
        print0(t.rt, f"iter {it}: loss {loss:.4f} | lr {lr:.2e} | {ms:.1f} ms/iter | "
                     f"{tokens_per_s:,.0f} tok/s{mfu} | eta {duration(eta)}")
        self.restart()


def last_evaluation(state):
    """'; its last evaluation, at iter N: val_loss ...' for a TrainState, or ''."""
    if not state.metrics:
        return ""
    return f"; its last evaluation, at iter {state.evaluated_at}: {summary(state.metrics)}"


def report_end(t):
    """The last line says where the run stopped and which evaluation its numbers come from."""
    state, stopped_by = t.state, t.stopped_by
    how = f"stopped by {stopped_by}" if stopped_by else "done"
    how += f" at iter {state.iter_num}"
    evaluated = last_evaluation(state) or "; not evaluated yet"
    print0(t.rt, f"{how}; saved {t.run_dir.path / 'last'}{evaluated}")
    if stopped_by:
        print0(t.rt, "continue with --init_from=resume and the same settings")


def summary(metrics):
    return ", ".join(f"{k} {fmt(v)}" for k, v in metrics.items() if isinstance(v, (int, float)))


def fmt(v):
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def duration(seconds):
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
