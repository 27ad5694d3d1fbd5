"""
Checkpoints: a directory per checkpoint, written atomically.

    model.safetensors   the weights (safetensors: a plain tensor format, nothing is unpickled on load)
    config.json         model config, tokenizer, labels, data info and the run's config; human-readable
    train_state.pt      optimizer, grad scaler, iteration, best metric, RNG and sampler state; only tensors,
                        numbers and strings, so torch.load(weights_only=True) reads it without unpickling code

A run directory holds last/ (written at every eval and at the end) and best/ (when validation improves).
"""

import json
import os
import shutil
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from config import UserError
from model import GPT, GPTConfig

WEIGHTS, CONFIG, TRAIN_STATE = "model.safetensors", "config.json", "train_state.pt"


def unwrap(model):
    """The plain GPT inside a DDP wrapper and/or a torch.compile wrapper, so saved keys never carry
    'module.' or '_orig_mod.' prefixes."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def write_directory(directory, fill):
    """Create `directory` atomically with fill(tmp), which writes its files into tmp.

    Everything is written into a hidden sibling directory first, then swapped in with renames. If the process
    dies at any point, either the previous directory or the new one is complete on disk (between the two
    renames the previous one is at .<name>.old, where find_checkpoint also looks)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp")
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(directory, model, info, train_state=None):
    """Write a checkpoint directory atomically (see write_directory)."""
    model = unwrap(model)
    # lm_head.weight is the same tensor as transformer.wte.weight (weight tying); safetensors refuses to store
    # shared tensors, and storing it once is enough: loading ties them again.
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    info = {"model": asdict(model.config), **info}

    def fill(tmp):
        save_file(state, tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(info, indent=2, default=str))
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE)

    write_directory(directory, fill)


def find_checkpoint(path):
    """A checkpoint directory from what a user passes: the checkpoint itself, or a run directory (its best/,
    else its last/). Falls back to the .old copy left by a save that was interrupted mid-swap."""
    path = Path(path)
    for candidate in (path, path / "best", path / "last"):
        if (candidate / CONFIG).is_file():
            return candidate
        old = candidate.with_name(f".{candidate.name}.old")
        if not candidate.exists() and (old / CONFIG).is_file():
            return old
    raise UserError(f"no checkpoint in {path} (expected {CONFIG} and {WEIGHTS} there or in best/ or last/)")


def read_info(directory):
    try:
        return json.loads((Path(directory) / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{Path(directory) / CONFIG} is unreadable ({e}); the checkpoint is damaged") from None


def model_config_from(info):
    known = {f.name for f in fields(GPTConfig)}
    return GPTConfig(**{k: v for k, v in info["model"].items() if k in known})


def empty_model(config):
    """A GPT whose tensors live on the "meta" device: names and shapes but no storage and no random init, so
    building even the largest GPT-2 costs nothing. The shell that weights are loaded into."""
    with torch.device("meta"):
        return GPT(config)


def expected_shapes(config):
    """{name: shape} of every tensor a checkpoint stores for this config (lm_head is wte, so it is not stored)."""
    return {k: tuple(v.shape) for k, v in empty_model(config).state_dict().items() if k != "lm_head.weight"}


def read_weights(path, config):
    """The tensors of a model.safetensors file, checked name by name and shape by shape against config."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e}); the checkpoint is damaged") from None
    expected = expected_shapes(config)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(f"{path} does not fit its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != expected[name]:
            raise UserError(f"{path}: {name} has shape {tuple(tensor.shape)}, the config says {expected[name]}")
    return state


def model_from_state(config, state):
    """A GPT holding exactly these tensors. assign=True makes the loaded tensors the parameters of the empty
    (meta) model, with no copy and no wasted random init; that replaces wte's Parameter object, so the head is
    tied to it again."""
    model = empty_model(config)
    model.load_state_dict(state, strict=False, assign=True)
    model.lm_head.weight = model.transformer.wte.weight
    assert not any(p.is_meta for p in model.parameters()), "a tensor was not loaded"
    return model


def load_model(directory, device="cpu"):
    """(model, info) from a checkpoint directory (or a run directory: see find_checkpoint)."""
    directory = find_checkpoint(directory)
    info = read_info(directory)
    config = model_config_from(info)
    model = model_from_state(config, read_weights(directory / WEIGHTS, config))
    return model.to(device), info


def load_train_state(directory):
    path = Path(directory) / TRAIN_STATE
    if not path.is_file():
        raise UserError(f"{path} not found: this checkpoint cannot be resumed (it has weights only)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is unreadable ({type(e).__name__}); the checkpoint is damaged") from None
