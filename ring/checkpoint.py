"""
Checkpoints: one directory per checkpoint, written atomically, checked when read.

    model.safetensors   the weights (safetensors: plain tensors, nothing is unpickled)
    config.json         CheckpointInfo (below): shape, task, tokenizer, labels, data, settings
    train_state.pt      what resuming needs besides the weights (last/ only): optimizer, grad
                        scaler, counters, RNG and sampler state; only tensors, numbers and
                        strings, so torch.load(weights_only=True) reads it without unpickling code
    SHA256SUMS          the sha256 of the other files, checked on every load (by hand: sha256sum -c)

A run directory holds last/ (written at every evaluation and at the end) and best/ (when validation
improves; weights and config only). Checkpoints written before SHA256SUMS existed load unchecked.
"""

import json
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ring.config import UserError
from ring.download import sha256_of
from model import GPTConfig, model_class

WEIGHTS, CONFIG, SUMS = "model.safetensors", "config.json", "SHA256SUMS"
TRAIN_STATE = "train_state.pt"

# --------------------------------------------------------------------------------------------------
# config.json


@dataclass
class CheckpointInfo:
    """What config.json holds, and who reads it.

    model       GPTConfig: the shape (everything that builds the model)
    task        "lm" (a GPT: next-token prediction) or "cls" (a GPTClassifier; n_classes > 0)
    tokenizer   data.<Tokenizer>.to_dict(): {"type": "gpt2"} or {"type": "char", "chars": "..."};
                train.py compares it with the data's before resuming or starting from the checkpoint
    labels      cls: the class names, class i is labels[i] (sample.py, evaluate.py, the HF export)
    data        lm: prepare_lm_data's meta (its source_sha256 must match to resume);
                cls: where each split came from
    iter_num    the optimizer steps behind these weights
    metrics     the evaluation these weights were saved with, made at iteration evaluated_at
    run         the settings of the run that wrote it (resume checks the shape against them)
    source      hf_import: where the weights were imported from (not imported twice)
    """

    model: GPTConfig
    task: str = "lm"
    tokenizer: dict = None
    labels: list = None
    data: dict = None
    iter_num: int = None
    metrics: dict = None
    evaluated_at: int = None
    run: dict = None
    source: str = None

    def to_json(self):
        return json.dumps({**asdict(self), "model": asdict(self.model)}, indent=2, default=str)

    @classmethod
    def from_dict(cls, d, where):
        """Read and check a config.json's contents; anything wrong is one line naming the file."""

        def bad(what):
            return UserError(f"{where} is damaged: {what}")

        if not isinstance(d, dict) or not isinstance(d.get("model"), dict):
            raise bad("it has no 'model' section")
        known = {f.name: f for f in fields(GPTConfig)}
        shape = {k: v for k, v in d["model"].items() if k in known}
        for key in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = shape.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(f"model.{key} is {value!r}, not a positive integer")
        if shape["n_embd"] % shape["n_head"]:
            raise bad(f"model.n_embd {shape['n_embd']} is not divisible by n_head "
                      f"{shape['n_head']}")
        model = GPTConfig(**shape)
        task = d.get("task") or ("cls" if model.n_classes else "lm")
        if task not in ("lm", "cls") or (task == "cls") != (model.n_classes > 0):
            raise bad(f"task {task!r} does not fit n_classes {model.n_classes}")
        tokenizer = d.get("tokenizer")
        if not isinstance(tokenizer, dict) or tokenizer.get("type") not in ("char", "gpt2"):
            raise bad("it names no tokenizer (expected {'type': 'gpt2'} or {'type': 'char', ...})")
        if tokenizer["type"] == "char" and len(tokenizer.get("chars") or "") != model.vocab_size:
            raise bad(f"its character vocabulary does not have vocab_size {model.vocab_size} "
                      "characters")
        labels = d.get("labels")
        if task == "cls" and (not isinstance(labels, list) or len(labels) != model.n_classes):
            raise bad(f"a classifier with {model.n_classes} classes needs as many label names")
        names = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in d.items() if k in names}, "model": model, "task": task})


# --------------------------------------------------------------------------------------------------
# Writing


def unwrap(model):
    """The plain model inside a DDP wrapper and/or a torch.compile wrapper, so saved keys never
    carry 'module.' or '_orig_mod.' prefixes."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def remove(path):
    """Remove a file, a directory tree, or a symbolic link itself (never what it points to)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def usual_permissions(directory):
    """Give every file in `directory` the mode a new file usually gets (0666 less the umask).
    safetensors creates its files readable by their owner only, which surprises whoever shares a
    checkpoint with another user."""
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def write_directory(directory, fill):
    """Create `directory` atomically with fill(tmp), which writes its files into tmp.

    Everything is written into a hidden sibling directory first, then swapped in with renames. If
    the process dies at any point, either the previous directory or the new one is complete on disk
    (between the two renames the previous one is at .<name>.old, where find_checkpoint also looks).
    An OS error (disk full, read-only) is one line; the previous directory is left as it was."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    old = directory.with_name(f".{directory.name}.old")
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        remove(tmp)
        tmp.mkdir()
        try:
            fill(tmp)
            usual_permissions(tmp)
        except BaseException:
            remove(tmp)
            raise
        if directory.exists() or directory.is_symlink():
            remove(old)
            os.replace(directory, old)
        os.replace(tmp, directory)
        remove(old)
    except OSError as e:
        raise UserError(f"could not write {directory}: {e.strerror or e} "
                        f"({e.filename or directory}); the previous copy, if any, is "
                        "intact") from None


def save_checkpoint(directory, model, info, train_state=None):
    """Write a checkpoint directory atomically (see write_directory). Non-finite weights are
    refused: a checkpoint must never hold a model that diverged."""
    model = unwrap(model)
    # lm_head.weight is the same tensor as transformer.wte.weight (weight tying); safetensors
    # refuses to store shared tensors, and storing it once is enough: loading ties them again.
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
             if k != "lm_head.weight"}
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise UserError(f"refusing to write {directory}: {broken[0]} holds NaN or inf")
    if isinstance(info, dict):  # the fields as a dict, e.g. {"task": "lm", "tokenizer": {...}}
        info = CheckpointInfo.from_dict({**info, "model": asdict(model.config)}, directory)
    info.model = model.config

    def fill(tmp):
        save_file(state, tmp / WEIGHTS)
        (tmp / CONFIG).write_text(info.to_json())
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE)
        names = sorted(p.name for p in tmp.iterdir())
        (tmp / SUMS).write_text("".join(f"{sha256_of(tmp / n)}  {n}\n" for n in names))

    write_directory(directory, fill)


# --------------------------------------------------------------------------------------------------
# Reading


def find_checkpoint(path):
    """A checkpoint directory from what a user passes: the checkpoint itself, or a run directory
    (its best/, else its last/). Falls back to the .old copy left by a save interrupted mid-swap."""
    path = Path(path)
    for candidate in (path, path / "best", path / "last"):
        if (candidate / CONFIG).is_file():
            return candidate
        old = candidate.with_name(f".{candidate.name}.old")
        if not candidate.exists() and (old / CONFIG).is_file():
            return old
    raise UserError(f"no checkpoint in {path} (expected {CONFIG} and {WEIGHTS} there or in best/ "
                    "or last/)")


def verify(directory, name):
    """Check a checkpoint's file against its SHA256SUMS (if any): one line if it is damaged."""
    directory = Path(directory)
    sums = directory / SUMS
    if not sums.is_file():
        return
    lines = [line.split(maxsplit=1) for line in sums.read_text().splitlines() if line]
    expected = {name: digest for digest, name in lines}
    if name not in expected:
        return
    if not (directory / name).is_file():
        raise UserError(f"{directory / name} is missing: the checkpoint is incomplete")
    if sha256_of(directory / name) != expected[name]:
        raise UserError(f"{directory / name} is damaged: its sha256 is not the one in {SUMS}")


def read_info(directory):
    """The checked CheckpointInfo of a checkpoint directory."""
    path = Path(directory) / CONFIG
    verify(directory, CONFIG)
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is unreadable ({e}); the checkpoint is damaged") from None
    return CheckpointInfo.from_dict(d, path)


def empty_model(config):
    """A model whose tensors live on the "meta" device: names and shapes but no storage and no
    random init, so building even the largest GPT-2 costs nothing. The shell that weights are loaded
    into."""
    with torch.device("meta"):
        return model_class(config)(config)


def expected_shapes(config):
    """{name: shape} of every tensor a checkpoint stores for this config (lm_head is wte: left
    out)."""
    shapes = {k: tuple(v.shape) for k, v in empty_model(config).state_dict().items()}
    shapes.pop("lm_head.weight")
    return shapes


def read_weights(path, config):
    """The tensors of a model.safetensors file, checked name by name and shape by shape against
    config, as float32."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e}); the checkpoint is "
                        "damaged") from None
    expected = expected_shapes(config)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(f"{path} does not fit its config: missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != expected[name]:
            raise UserError(f"{path}: {name} has shape {tuple(tensor.shape)}, the config says "
                            f"{expected[name]}")
        if not tensor.is_floating_point():
            raise UserError(f"{path}: {name} holds {tensor.dtype}, not floating-point weights")
    return {k: v.float() for k, v in state.items()}


def model_from_state(config, state):
    """A model holding exactly these tensors. assign=True makes the loaded tensors the parameters of
    the empty (meta) model, with no copy and no wasted random init; that replaces wte's Parameter
    object, so the head is tied to it again."""
    model = empty_model(config)
    model.load_state_dict(state, strict=False, assign=True)
    model.lm_head.weight = model.transformer.wte.weight
    assert not any(p.is_meta for p in model.parameters()), "a tensor was not loaded"
    return model


def load_model(path, device="cpu"):
    """(model, info) from a checkpoint directory (or a run directory: see find_checkpoint): a GPT
    for a language model, a GPTClassifier for a classifier."""
    directory = find_checkpoint(path)
    info = read_info(directory)
    verify(directory, WEIGHTS)
    model = model_from_state(info.model, read_weights(directory / WEIGHTS, info.model))
    return model.to(device), info


def load_train_state(directory):
    """What resuming needs (see train.py's TrainState), checked for its parts."""
    path = Path(directory) / TRAIN_STATE
    if not path.is_file():
        raise UserError(f"{path} not found: this checkpoint cannot be resumed (it has weights "
                        "only)")
    verify(directory, TRAIN_STATE)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is unreadable ({type(e).__name__}); the checkpoint is "
                        "damaged") from None
    parts = ("iter_num", "optimizer", "sampler", "rng")
    missing = [k for k in parts if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserError(f"{path} has no {missing[0]} state: the checkpoint is damaged")
    return state


def check_same_meaning(info, meta, where, resume):
    """Refuse a starting point whose weights would mean something else on this data: a classifier
    where a language model is needed, another tokenizer or character vocabulary (the same ids would
    stand for other characters), and, to resume, another text than the run was training on."""
    if info.task == "cls":
        raise UserError(f"{where} is a classifier ({', '.join(info.labels)}), not a language "
                        "model; give a language model's checkpoint")
    theirs, ours = info.tokenizer, meta["tokenizer"]
    if theirs["type"] != ours["type"]:
        raise UserError(f"{where} was trained with another tokenizer ({theirs['type']}) than the "
                        f"data's ({ours['type']}); pass --tokenizer={theirs['type']}")
    if theirs != ours:
        changed = sorted(set(theirs["chars"]) ^ set(ours["chars"]))
        raise UserError(f"{where} was trained with another tokenizer: its characters are not this "
                        f"text's ({len(changed)} differ, e.g. {changed[:5]}); a char-level model "
                        "can only continue on text with the same characters")
    source = (info.data or {}).get("source_sha256")
    if resume and source is not None and source != meta["source_sha256"]:
        raise UserError(f"cannot resume {where}: the run trained on {info.data.get('source')} and "
                        f"this text ({meta['source']}) is another one; to continue training on new "
                        f"text, start a new run with --init_from={Path(where).parent}")
