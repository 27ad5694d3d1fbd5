"""Faults and bad input: what the project promises (README, "Under faults") and how each promise holds.

Kill -9 inside a save, SIGTERM, divergence, two writers, resume mismatches, damaged checkpoints, bad
settings, float16 with loss scaling, and outputs that must never overwrite what the command did not
write. The kills are deterministic (the process kills itself at a chosen point), so nothing here sleeps."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import finetune
import sample
import train
from hf_import import export_hf
from model import GPT
from train import load_model
from ring import checkpoint
from ring import runtime
from ring.config import UserError
from ring.download import sha256_of
from ring.rundir import RunDirectory
from conftest import tiny_config
from test_train import TEXT, interrupt_during_micro_batch, metrics, tiny_run, train_losses

ROOT = Path(__file__).resolve().parents[1]


def same_weights(a, b):
    a, b = load_file(Path(a) / "model.safetensors"), load_file(Path(b) / "model.safetensors")
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def run_script(code, *args, env=None):
    """Run python code with the project on the path; returns the CompletedProcess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **{k: str(v) for k, v in (env or {}).items()}}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


# A run that kills itself (SIGKILL: no handler, no cleanup) at the KILL_AT-th rename into its out_dir.
# Saves rename twice (the old checkpoint away, the new one in), so the kill points fall inside saves.
KILL_DURING_SAVE = """
import os, signal, sys
import train
from ring import checkpoint
out, count, real = sys.argv[1], {"n": 0}, os.replace
def replace(src, dst):
    if str(dst).startswith(out):
        count["n"] += 1
        if count["n"] == int(os.environ["KILL_AT"]):
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
checkpoint.os.replace = replace
train.main(sys.argv[2:])
"""


@pytest.mark.parametrize("kill_at", [3, 4, 6])  # best/ moved away; best/ replaced; last/ moved away
def test_kill_during_a_save_leaves_a_checkpoint_that_resumes_exactly(tmp_path, kill_at):
    train.main(tiny_run(tmp_path, "straight"))
    out = str(tmp_path / "killed")
    result = run_script(KILL_DURING_SAVE, out, *tiny_run(tmp_path, "killed"), env={"KILL_AT": kill_at})
    assert result.returncode == -signal.SIGKILL
    model, info = load_model(checkpoint.find_checkpoint(Path(out) / "last"))  # loadable
    train.main(tiny_run(tmp_path, "killed", init_from="resume"))
    assert same_weights(tmp_path / "straight" / "last", tmp_path / "killed" / "last")
    assert train_losses(tmp_path / "killed") == train_losses(tmp_path / "straight")
    iters = [(r["iter"], "loss" in r) for r in metrics(tmp_path / "killed")]
    assert len(iters) == len(set(iters))  # every iteration logged once, despite the repeat


def test_sigterm_saves_last_and_stops_cleanly(tmp_path, monkeypatch, capsys):
    interrupt_during_micro_batch(monkeypatch, 5, signal.SIGTERM)  # during step 3
    train.main(tiny_run(tmp_path))
    state = torch.load(tmp_path / "out" / "last" / "train_state.pt", weights_only=True)
    assert state["iter_num"] == 3
    out = capsys.readouterr().out
    assert "stopped by SIGTERM at iter 3" in out and "its last evaluation, at iter 0" in out


def test_a_diverging_run_stops_at_once_and_writes_no_nan(tmp_path):
    with pytest.raises(UserError, match=r"the loss became (nan|inf).* training diverged"):
        train.main(tiny_run(tmp_path, learning_rate=1e6, max_iters=30, eval_interval=5, grad_clip=0))
    for name in ("last", "best"):
        weights = load_file(tmp_path / "out" / name / "model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values())
    assert all(v == v for row in metrics(tmp_path / "out") for v in row.values() if isinstance(v, float))


def test_one_writer_per_run_directory(tmp_path):
    with RunDirectory(tmp_path / "out") as other:
        other.open()  # another run holds out/
        with pytest.raises(UserError, match=rf"out is in use by another run, pid {os.getpid()} on "):
            train.main(tiny_run(tmp_path))
    train.main(tiny_run(tmp_path, max_iters=2))
    with pytest.raises(UserError, match="already holds a run; continue it with --init_from=resume"):
        train.main(tiny_run(tmp_path, max_iters=2))
    (tmp_path / "out" / "notes.txt").write_text("mine")
    train.main(tiny_run(tmp_path, max_iters=4, overwrite=True))  # starting over: explicit
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"  # only the run's own files replaced
    assert [r["iter"] for r in metrics(tmp_path / "out") if "val_loss" in r] == [0, 4]


def test_resume_refuses_what_would_change_the_meaning_of_the_weights(tmp_path):
    train.main(tiny_run(tmp_path, max_iters=2))
    # the same number of characters, some of them others: the same ids would mean other characters
    swapped = TEXT.replace("q", "Q").replace("z", "Z")
    (tmp_path / "other.txt").write_text(swapped)
    with pytest.raises(UserError, match=r"2 characters are not in this model's vocabulary: 'QZ'"):
        train.main(tiny_run(tmp_path, init_from="resume", dataset=tmp_path / "other.txt"))
    # the same characters, another text: resuming would silently switch the training data
    (tmp_path / "shuffled.txt").write_text(" ".join(reversed(TEXT.split())))
    with pytest.raises(UserError, match="is another one; to continue training on new text, start a new"):
        train.main(tiny_run(tmp_path, init_from="resume", dataset=tmp_path / "shuffled.txt"))
    info = json.loads((tmp_path / "out" / "last" / "config.json").read_text())
    assert info["tokenizer"]["chars"] == "".join(sorted(set(TEXT)))  # untouched


def resign(directory):
    """Rewrite a checkpoint's SHA256SUMS after editing its files by hand, so that what the edit
    broke, not the checksum, is what loading must find."""
    names = sorted(p.name for p in directory.iterdir() if p.name != "SHA256SUMS")
    (directory / "SHA256SUMS").write_text("".join(f"{sha256_of(directory / n)}  {n}\n" for n in names))


def damage(directory, how):
    config = directory / "config.json"
    sums = directory / "SHA256SUMS"
    if how == "bit flip":
        data = bytearray((directory / "model.safetensors").read_bytes())
        data[-100] ^= 0x10
        (directory / "model.safetensors").write_bytes(bytes(data))
    elif how == "truncated weights":
        path = directory / "model.safetensors"
        path.write_bytes(path.read_bytes()[:-1000])
    elif how == "no sums":  # deleting one file must not turn every check off
        sums.unlink()
    elif how == "unlisted":  # nor deleting one line
        sums.write_text("".join(line + "\n" for line in sums.read_text().splitlines()
                                if "model.safetensors" not in line))
    elif how == "garbled sums":
        sums.write_text("not a checksum\n")
    else:
        info = json.loads(config.read_text())
        if how == "no model":
            del info["model"]
        elif how == "no tokenizer":
            del info["tokenizer"]
        elif how == "n_head":
            info["model"]["n_head"] = 3
        elif how == "huge n_layer":
            info["model"]["n_layer"] = 10**6
        elif how == "huge n_embd":
            info["model"]["n_embd"] = 10**9
        elif how == "n_layer not the file's":
            info["model"]["n_layer"] = 3
        elif how == "string dropout":
            info["model"]["dropout"] = "0.1"
        config.write_text(json.dumps(info))
        resign(directory)


@pytest.mark.parametrize("how, message", [
    ("bit flip", r"model.safetensors is damaged: its sha256 is not the one in SHA256SUMS"),
    ("truncated weights", r"model.safetensors is damaged"),
    ("no sums", r"best is damaged: it has no SHA256SUMS, so its files cannot be checked"),
    ("unlisted", r"model.safetensors is not listed in SHA256SUMS, so it cannot be checked"),
    ("garbled sums", r"SHA256SUMS is damaged: line 1 is not '<sha256>  <file name>'"),
    ("no model", r"config.json is damaged: it has no 'model' section"),
    ("no tokenizer", r"config.json is damaged: it names no tokenizer"),
    ("n_head", r"config.json: n_embd 32 is not divisible by n_head 3"),
    ("huge n_layer", r"config.json: n_layer is 1000000, not an integer in \[1, 1024\]"),
    ("huge n_embd", r"config.json: n_embd is 1000000000, not an integer in"),
    ("n_layer not the file's", r"the weights do not fit the model's config .*; the checkpoint is damaged"),
    ("string dropout", r"config.json: dropout is '0.1', not a number in \[0, 1\)"),
])
def test_a_damaged_checkpoint_is_one_line_naming_the_file(tmp_path, how, message):
    train.main(tiny_run(tmp_path, max_iters=2))
    damage(tmp_path / "out" / "best", how)
    with pytest.raises(UserError, match=message) as e:
        load_model(tmp_path / "out" / "best")
    assert "\n" not in str(e.value)
    result = subprocess.run([sys.executable, "sample.py", "--out_dir", str(tmp_path / "out"), "--device=cpu"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1


def test_checkpoint_files_get_the_usual_permissions(tmp_path):
    # safetensors creates its file as 0600; a checkpoint shared with a colleague must be readable
    umask = os.umask(0o022)
    try:
        info = {"task": "lm", "tokenizer": {"type": "gpt2"}}
        checkpoint.save_checkpoint(tmp_path / "c", GPT(tiny_config()), info)
    finally:
        os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "c").iterdir()} == {"0o644"}


def test_a_train_state_without_its_optimizer_is_refused(tmp_path):
    train.main(tiny_run(tmp_path, max_iters=2))
    last = tmp_path / "out" / "last"
    state = torch.load(last / "train_state.pt", weights_only=True)
    del state["optimizer"]
    torch.save(state, last / "train_state.pt")
    resign(last)
    with pytest.raises(UserError, match="train_state.pt has no optimizer state: the checkpoint is damaged"):
        train.main(tiny_run(tmp_path, init_from="resume"))


@pytest.mark.parametrize("flag, message", [
    ("--learning_rate=nan", "learning_rate must be a finite number, not nan"),
    ("--beta1=1.5", r"beta1 must be in \[0, 1\), not 1.5"),
    ("--weight_decay=-1", "weight_decay must be >= 0, not -1.0"),
    ("--seed=18446744073709551617", r"seed must be in \[0, "),
    ("--dropout=1", r"dropout must be in \[0, 1\), not 1.0"),
    ("--dtype=float64", "dtype must be one of auto, float32, bfloat16, float16"),
    ("--n_head=5", r"n_embd \(32\) must be divisible by n_head \(5\)"),
])
def test_bad_settings_stop_before_anything_is_prepared(tmp_path, flag, message):
    args = tiny_run(tmp_path) + [flag, f"--dataset={tmp_path / 'missing.txt'}"]  # the data comes later
    with pytest.raises(UserError, match=message):
        train.main(args)
    assert not (tmp_path / "out").exists()


def test_settings_are_checked_in_the_python_api_too():
    with pytest.raises(UserError, match="learning_rate must be a finite number"):
        train.TrainConfig(learning_rate=float("inf"))
    with pytest.raises(UserError, match="lora_rank must be >= 0"):
        finetune.FinetuneConfig(lora_rank=-2)


def test_a_wrongly_typed_flag_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "train.py", "--batch_size=eight"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == "error: --batch_size must be an integer, not 'eight'"


def test_a_batch_that_processes_cannot_share_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(UserError, match="batch_size 4 cannot be shared by 8 processes"):
        train.main(tiny_run(tmp_path))
    with pytest.raises(UserError, match="batch_size 4 cannot be shared by 8 processes"):
        finetune.main(["--init_from=gpt2", "--batch_size=4", f"--out_dir={tmp_path / 'ft'}"])
    assert not (tmp_path / "out").exists() and not (tmp_path / "ft").exists()


def test_out_dir_that_is_a_file_or_inside_a_checkpoint_is_refused_first(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="out_dir .*file is a file, not a directory"):
        train.main(tiny_run(tmp_path, out="file"))
    train.main(tiny_run(tmp_path, max_iters=1))
    with pytest.raises(UserError, match="is inside the checkpoint .*out/last"):
        train.main(tiny_run(tmp_path, out="out/last/nested"))


def test_disk_full_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    train.main(tiny_run(tmp_path, max_iters=2))
    before = load_file(tmp_path / "out" / "last" / "model.safetensors")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "model.safetensors")

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(UserError, match=r"could not write .*out/(best|last): No space left on device"):
        train.main(tiny_run(tmp_path, init_from="resume", max_iters=4))
    monkeypatch.undo()
    after, _ = load_model(tmp_path / "out" / "last")
    assert all(torch.equal(before[k], v) for k, v in load_file(tmp_path / "out" / "last" / "model.safetensors").items())


def test_export_never_replaces_a_run_or_what_it_did_not_write(tmp_path):
    train.main(tiny_run(tmp_path, max_iters=1))
    run = tmp_path / "out"
    before = sorted(p.name for p in run.iterdir())
    for target in (run, tmp_path, run / "best" / "hf"):  # the run, its parent, inside a checkpoint
        with pytest.raises(UserError, match="holds a training run|lies inside the checkpoint"):
            export_hf(run, target, force=True)
    assert sorted(p.name for p in run.iterdir()) == before
    export_hf(run, tmp_path / "hf")
    export_hf(run, tmp_path / "hf", force=True)  # an earlier export may be replaced, with --force


def test_the_same_command_gives_the_same_weights(tmp_path):
    lm = GPT(tiny_config(vocab_size=50257, block_size=32))
    checkpoint.save_checkpoint(tmp_path / "lm", lm, {"task": "lm", "tokenizer": {"type": "gpt2"}})
    rows = [(f"{w} {w}", "a" if i % 2 else "b") for i, w in enumerate("red blue cat dog one two".split() * 20)]
    (tmp_path / "t.csv").write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in rows))
    for out in ("one", "two"):  # a new head on a pretrained body: seeded
        finetune.main([f"--init_from={tmp_path / 'lm'}", f"--dataset={tmp_path / 't.csv'}",
                       f"--data_dir={tmp_path / 'data'}", f"--out_dir={tmp_path / out}", "--max_iters=2",
                       "--batch_size=8", "--block_size=16", "--device=cpu", "--dtype=float32"])
    assert same_weights(tmp_path / "one" / "last", tmp_path / "two" / "last")


def test_compiled_training_on_two_threads_gives_the_same_weights(tmp_path):
    # inductor's CPU kernel for the embedding's gradient adds with atomics unless in deterministic
    # mode (runtime.maybe_compile); two threads and many repeats of few tokens make it show
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for out in ("one", "two"):
            train.main(tiny_run(tmp_path, out, compile=True, dropout=0.0, dtype="bfloat16",
                                n_embd=64, block_size=64, batch_size=16, max_iters=6))
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    assert same_weights(tmp_path / "one" / "last", tmp_path / "two" / "last")


def test_float16_with_a_grad_scaler_skips_overflowing_steps_and_resumes_exactly(tmp_path, monkeypatch):
    # float16 is what GPUs without bf16 (older CUDA cards, Apple GPUs) train in; torch runs the same
    # autocast and GradScaler on a CPU. A huge initial scale makes the first step overflow.
    monkeypatch.setattr(runtime.Runtime, "make_scaler", lambda self: torch.amp.GradScaler("cpu", init_scale=2.0**24))
    fp16 = dict(dtype="float16", dropout=0.0)
    train.main(tiny_run(tmp_path, "first", max_iters=1, eval_interval=1, **fp16))
    state = torch.load(tmp_path / "first" / "last" / "train_state.pt", weights_only=True)
    assert state["scaler"]["scale"] == 2.0**23  # the overflow halved the scale...
    assert same_weights(tmp_path / "first" / "best", tmp_path / "first" / "last")  # ...and skipped the step

    train.main(tiny_run(tmp_path, "straight", max_iters=40, eval_interval=20, **fp16))
    rows = metrics(tmp_path / "straight")
    evals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert evals[-1] < evals[0] - 0.1  # it learns
    norms = [r["grad_norm"] for r in rows if "grad_norm" in r and r["grad_norm"] < float("inf")]
    assert norms and max(norms) < 100  # clipping saw the true gradients, not ones scaled by ~2**20

    train.main(tiny_run(tmp_path, "split", max_iters=20, eval_interval=20, **fp16))
    train.main(tiny_run(tmp_path, "split", max_iters=40, eval_interval=20, init_from="resume", **fp16))
    assert same_weights(tmp_path / "split" / "last", tmp_path / "straight" / "last")


def test_empty_text_and_non_utf8_prompts_are_one_line(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="empty.txt holds no document, .*there is nothing to learn from"):
        train.main(tiny_run(tmp_path, dataset=tmp_path / "empty.txt"))
    train.main(tiny_run(tmp_path, max_iters=1))
    (tmp_path / "prompt.txt").write_bytes(b"caf\xe9")
    with pytest.raises(UserError, match=r"prompt file .*prompt.txt is not UTF-8 text \(byte 3\)"):
        sample.main(["--out_dir", str(tmp_path / "out"), f"--start=FILE:{tmp_path / 'prompt.txt'}", "--device=cpu"])
    with pytest.raises(UserError, match="temperature"):
        sample.main(["--out_dir", str(tmp_path / "out"), "--temperature=nan", "--device=cpu"])


def test_top_p_zero_through_the_python_api_is_greedy():
    logits = torch.tensor([[0.1, 3.0, 0.2]])
    assert sample.sample_next_token(logits, 1.0, top_p=0.0).item() == 1
    with pytest.raises(ValueError, match="top_p must be in"):
        sample.generate(GPT(tiny_config()), torch.zeros(1, 1, dtype=torch.long), 2, top_p=1.5)


def test_a_csv_cell_over_128_kib_is_read(tmp_path):
    from ring.tables import read_table

    long = "word " * 40_000  # 200 KB in one quoted cell: valid CSV
    (tmp_path / "long.csv").write_text(f'text,label\n"{long}",a\nshort,b\n')
    columns, rows = read_table(tmp_path / "long.csv")
    assert len(rows) == 2 and rows[0][1]["text"] == long


def test_resume_refuses_a_metrics_log_cut_short_since_the_save(tmp_path):
    train.main(tiny_run(tmp_path, max_iters=4))
    log = tmp_path / "out" / "metrics.jsonl"
    log.write_bytes(log.read_bytes()[:10])
    with pytest.raises(UserError, match="metrics.jsonl is shorter than when .* was saved"):
        train.main(tiny_run(tmp_path, max_iters=6, init_from="resume"))


def test_overwrite_removes_nothing_until_the_data_is_found(tmp_path):
    train.main(tiny_run(tmp_path, max_iters=2))
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    with pytest.raises(UserError, match="neither a built-in name"):
        train.main(tiny_run(tmp_path, max_iters=2, overwrite=True, dataset=tmp_path / "typo.txt"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before
    load_model(tmp_path / "out" / "last")  # the old run is whole


def test_a_run_that_fails_before_writing_leaves_no_empty_out_dir(tmp_path):
    with pytest.raises(UserError, match="neither a built-in name"):
        train.main(tiny_run(tmp_path, out="new/run", dataset=tmp_path / "typo.txt"))
    assert not (tmp_path / "new" / "run").exists()


def test_a_full_disk_in_torch_save_is_one_line_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    train.main(tiny_run(tmp_path, max_iters=2))
    before = load_file(tmp_path / "out" / "last" / "model.safetensors")

    def full(*args, **kwargs):  # what torch.save raises when the disk fills during its write
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter "
                           "failed writing file data/3: file write failed")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(UserError, match="could not write .*out/last: .*file write failed"):
        train.main(tiny_run(tmp_path, init_from="resume", max_iters=4))
    monkeypatch.undo()
    after = load_file(tmp_path / "out" / "last" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
