"""The training loop: exact resume, atomic checkpoints, Ctrl-C, DDP, the device/dtype resolver."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train
from train import load_model
from train import lr_at
from ring import checkpoint
from ring.config import UserError
from ring.runtime import maybe_compile, resolve_dtype, setup_runtime

TEXT = "".join(f"{w} " for w in ("the quick brown fox jumps over the lazy dog and then it sleeps " * 300).split())


def tiny_run(tmp_path, out="out", **overrides):
    """Command-line arguments for a seconds-long run on a small text."""
    src = tmp_path / "text.txt"
    if not src.exists():
        src.write_text(TEXT)
    args = dict(out_dir=str(tmp_path / out), dataset=str(src), data_dir=str(tmp_path / "data"), tokenizer="char",
                n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=4, dropout=0.1,
                max_iters=8, lr_decay_iters=8, warmup_iters=2, eval_interval=4, eval_iters=2, log_interval=1,
                gradient_accumulation_steps=2, device="cpu", dtype="float32")
    args.update(overrides)
    return [f"--{k}={v}" for k, v in args.items()]


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def train_losses(run_dir):
    return {row["iter"]: row["loss"] for row in metrics(run_dir) if "loss" in row}


def test_resume_is_exact(tmp_path):
    # 8 steps straight, against 4 steps + resume + 4 steps: same losses, bit-identical weights. Dropout is on,
    # so the RNG state must be restored too, and the batch sampler must continue where it stopped.
    train.main(tiny_run(tmp_path, "straight"))
    train.main(tiny_run(tmp_path, "split", max_iters=4))
    train.main(tiny_run(tmp_path, "split", init_from="resume"))
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")
    a = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    b = load_file(tmp_path / "split" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_directory_layout_and_metrics(tmp_path):
    train.main(tiny_run(tmp_path))
    run = tmp_path / "out"
    # last/ holds what resuming needs; best/ only what using the model needs
    assert {p.name for p in (run / "last").iterdir()} == {"model.safetensors", "config.json", "train_state.pt",
                                                         "SHA256SUMS"}
    assert {p.name for p in (run / "best").iterdir()} == {"model.safetensors", "config.json", "SHA256SUMS"}
    info = json.loads((run / "last" / "config.json").read_text())
    assert info["model"]["n_layer"] == 2 and info["tokenizer"]["type"] == "char" and info["run"]["max_iters"] == 8
    evals = [row for row in metrics(run) if "val_loss" in row]
    assert [row["iter"] for row in evals] == [0, 4, 8]
    assert all("train_loss" in row for row in evals)
    steps = [row for row in metrics(run) if "loss" in row]
    assert {"iter", "loss", "lr", "ms_per_iter", "tokens_per_s"} <= set(steps[0])
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]  # it learned something
    # bits per byte: a character of this (ASCII) text is a byte, so it is the loss in bits
    assert all(row["val_bpb"] == pytest.approx(row["val_loss"] / math.log(2)) for row in evals)
    state = torch.load(run / "last" / "train_state.pt", weights_only=True)
    assert state["iter_num"] == 8


def test_resume_with_another_shape_is_refused(tmp_path):
    train.main(tiny_run(tmp_path, max_iters=2))
    with pytest.raises(UserError, match="with other settings.*n_embd 32 -> 64"):
        train.main(tiny_run(tmp_path, init_from="resume", n_embd=64))


def test_failed_save_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    train.main(tiny_run(tmp_path, max_iters=2))
    last = tmp_path / "out" / "last"
    before = load_file(last / "model.safetensors")
    model, info = load_model(last)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)  # dies after the weights, before train_state.pt
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)
    with pytest.raises(UserError, match="could not write .*disk full.*the previous copy, if any, is intact"):
        checkpoint.save_checkpoint(last, model, {"tokenizer": info.tokenizer}, {"iter_num": 9})
    after = load_file(last / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    load_model(last)
    assert torch.load(last / "train_state.pt", weights_only=True)["iter_num"] == 2


def test_interrupted_swap_is_found_at_the_old_path(tmp_path):
    train.main(tiny_run(tmp_path, max_iters=2))
    run = tmp_path / "out"
    os.replace(run / "last", run / ".last.old")  # as if killed between the two renames
    assert checkpoint.find_checkpoint(run / "last") == run / ".last.old"


def interrupt_during_micro_batch(monkeypatch, n, signum=signal.SIGINT):
    """Make the run receive Ctrl-C (SIGINT, or another signal) while computing its n-th micro-batch."""
    calls = {"n": 0}
    original = train.LanguageModelling.loss

    def interrupting(self, model, batch):
        calls["n"] += 1
        if calls["n"] == n:
            signal.raise_signal(signum)
        return original(self, model, batch)

    monkeypatch.setattr(train.LanguageModelling, "loss", interrupting)


def test_ctrl_c_saves_last_and_stops_cleanly(tmp_path, monkeypatch):
    interrupt_during_micro_batch(monkeypatch, 5)  # during step 3 (2 micro-batches per step)
    train.main(tiny_run(tmp_path))
    state = torch.load(tmp_path / "out" / "last" / "train_state.pt", weights_only=True)
    assert state["iter_num"] == 3  # the step in progress was finished, then saved


def test_compiled_model_saves_plain_keys(tmp_path):
    from conftest import tiny_config
    from model import GPT

    model = GPT(tiny_config())
    compiled = torch.compile(model)
    checkpoint.save_checkpoint(tmp_path / "c", compiled, {"tokenizer": {"type": "gpt2"}})
    keys = load_file(tmp_path / "c" / "model.safetensors").keys()
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in keys)


def test_lr_schedule():
    lr = lambda s: lr_at(s, learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110)
    # warmup: step s gets (s + 1) / (warmup_iters + 1) of the peak, so step 0 already moves
    assert lr(0) == pytest.approx(1 / 11) and lr(9) == pytest.approx(10 / 11)
    assert all(lr(s) < lr(s + 1) for s in range(10))
    assert lr(10) == pytest.approx(1.0)  # the cosine starts at the peak
    assert lr(11) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 100)))
    assert lr(60) == pytest.approx(0.55)  # halfway down the cosine
    assert lr(109) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 99 / 100)))
    assert all(lr(s) > lr(s + 1) for s in range(10, 110))
    assert lr(110) == pytest.approx(0.1) and lr(111) == 0.1 and lr(1000) == 0.1
    assert lr_at(0, 1.0, 0.1, warmup_iters=0, lr_decay_iters=100) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "device, bf16, requested, expected",
    [
        ("cuda", True, "auto", ("bfloat16", False)),  # Ampere and newer
        ("cuda", False, "auto", ("float16", True)),  # older GPUs: float16 with a GradScaler
        ("mps", True, "auto", ("bfloat16", False)),
        ("mps", False, "auto", ("float16", True)),
        ("cpu", True, "auto", ("bfloat16", False)),  # a CPU with AVX-512 BF16 / AMX
        ("cpu", False, "auto", ("float32", False)),  # bf16 would be emulated: slower
        ("cpu", False, "bfloat16", ("bfloat16", False)),  # but allowed when asked for
        ("cuda", True, "float32", ("float32", False)),
        ("cpu", True, "float16", ("float16", True)),  # slow, but the path GPUs without bf16 take
    ],
)
def test_device_dtype_resolver(device, bf16, requested, expected):
    assert resolve_dtype(requested, device, bf16) == expected


def test_resolver_refuses_impossible_requests():
    with pytest.raises(UserError):
        resolve_dtype("bfloat16", "cuda", False)
    with pytest.raises(UserError):
        resolve_dtype("float64", "cpu", True)


def test_ddp_two_processes_match_one_on_the_same_global_batch(tmp_path):
    # One process accumulating 2 micro-batches per step, against 2 processes with one each: the global batch
    # is the same, so the losses must agree (up to float summation order).
    train.main(tiny_run(tmp_path, "single", dropout=0.0, max_iters=4))
    torchrun(tmp_path, "ddp", dropout=0.0, max_iters=4)
    single, ddp = train_losses(tmp_path / "single"), train_losses(tmp_path / "ddp")
    assert single.keys() == ddp.keys() == {1, 2, 3, 4}
    for k in single:
        assert ddp[k] == pytest.approx(single[k], abs=1e-5)


def test_two_processes_evaluate_as_one_does(tmp_path):
    # Each process scores its rows of the validation batches and its share of the HellaSwag
    # examples; the sums added up across processes give one process's numbers.
    from test_hellaswag import EXAMPLES, write_file

    (tmp_path / "data" / "hellaswag").mkdir(parents=True)
    write_file(tmp_path / "data" / "hellaswag" / "hellaswag_val.jsonl", EXAMPLES)
    options = dict(tokenizer="gpt2", n_embd=16, dropout=0.0, max_iters=0, eval_iters=3,
                   eval_hellaswag=5)
    train.main(tiny_run(tmp_path, "single", **options))
    torchrun(tmp_path, "ddp", **options)
    [single], [ddp] = metrics(tmp_path / "single"), metrics(tmp_path / "ddp")
    for key in ("train_loss", "val_loss", "val_bpb", "hellaswag_acc", "hellaswag_acc_norm"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-6), key
    assert ddp["hellaswag_examples"] == single["hellaswag_examples"] == 5


def test_init_from_a_checkpoint_needs_its_tokenizer(tmp_path):
    train.main(tiny_run(tmp_path, "first", max_iters=2))
    # continuing a char-level run of ours on the same text: the same vocabulary, so it starts from its weights
    train.main(tiny_run(tmp_path, "second", max_iters=2, init_from=str(tmp_path / "first")))
    first = [r for r in metrics(tmp_path / "first") if "val_loss" in r][-1]["val_loss"]
    second = [r for r in metrics(tmp_path / "second") if "val_loss" in r][0]["val_loss"]
    assert second == pytest.approx(first, abs=1e-6)
    # a text that uses only some of its characters is encoded with the model's own vocabulary
    part = tmp_path / "part.txt"
    part.write_text("the lazy dog sleeps then the dog jumps " * 40)
    train.main(tiny_run(tmp_path, "subset", max_iters=2, init_from=str(tmp_path / "first"), dataset=str(part)))
    info = json.loads((tmp_path / "subset" / "last" / "config.json").read_text())
    assert info["tokenizer"] == json.loads((tmp_path / "first" / "last" / "config.json").read_text())["tokenizer"]
    # characters the model does not know are refused, by name
    other = tmp_path / "other.txt"
    other.write_text("a completely different alphabet: XYZ 123 " * 50)
    with pytest.raises(UserError, match="7 characters are not in this model's vocabulary: '123:XYZ'"):
        train.main(tiny_run(tmp_path, "third", max_iters=2, init_from=str(tmp_path / "first"), dataset=str(other)))


def test_compile_failure_falls_back_to_eager_with_one_line(capsys):
    from conftest import tiny_config
    from model import GPT

    model = GPT(tiny_config())
    rt = setup_runtime("cpu", "float32")

    def failing(m):
        raise RuntimeError("no C++ compiler\nmore details")

    assert maybe_compile(model, True, rt, failing) is model
    out = capsys.readouterr().out
    assert "warning: torch.compile failed (RuntimeError: no C++ compiler); running eager" in out


def torchrun(tmp_path, out, **overrides):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
           *tiny_run(tmp_path, out, **overrides)]
    result = subprocess.run(cmd, cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_ddp_resume_is_exact(tmp_path):
    # Each rank has its own dropout masks; all of their RNG states are saved, so a resumed DDP run continues
    # exactly too.
    torchrun(tmp_path, "straight", max_iters=4, eval_interval=2)
    torchrun(tmp_path, "split", max_iters=2, eval_interval=2)
    torchrun(tmp_path, "split", max_iters=4, eval_interval=2, init_from="resume")
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")
    a = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    b = load_file(tmp_path / "split" / "last" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_on_an_evaluation_step_evaluates_after_resume(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        interrupt_during_micro_batch(patch, 7)  # during step 4, whose end is an evaluation (eval_interval 4)
        train.main(tiny_run(tmp_path, "split"))
    train.main(tiny_run(tmp_path, "split", init_from="resume"))
    train.main(tiny_run(tmp_path, "straight"))
    evals = lambda run: [(r["iter"], r["val_loss"]) for r in metrics(tmp_path / run) if "val_loss" in r]
    assert evals("split") == evals("straight")  # the evaluation at step 4 was made after the resume


def test_gradients_are_clipped_before_the_step(tmp_path, monkeypatch):
    # The norm logged is the one before clipping; the optimizer must only ever see clipped gradients.
    seen, original = [], torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        seen.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    train.main(tiny_run(tmp_path, grad_clip=0.01, max_iters=3))
    logged = [row["grad_norm"] for row in metrics(tmp_path / "out") if "grad_norm" in row]
    assert len(seen) == 3 and all(n <= 0.01 * 1.0001 for n in seen)
    assert all(n > 0.01 for n in logged)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_as_one_process_does(tmp_path):
    # Two torchrun agents, as on two machines (--nnodes=2, a rendezvous at 127.0.0.1), one process
    # each, against one process with the same global batch: the run is the same.
    train.main(tiny_run(tmp_path, "single", dropout=0.0, max_iters=4))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = free_port()
    agents = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}",
         "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}", "train.py",
         *tiny_run(tmp_path, "nodes", dropout=0.0, max_iters=4)],
        cwd=Path(__file__).parents[1], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for rank in (0, 1)]
    for agent in agents:
        _, err = agent.communicate(timeout=300)
        assert agent.returncode == 0, err[-2000:]
    single, nodes = train_losses(tmp_path / "single"), train_losses(tmp_path / "nodes")
    assert single.keys() == nodes.keys() == {1, 2, 3, 4}
    for k in single:
        assert nodes[k] == pytest.approx(single[k], abs=1e-5)
