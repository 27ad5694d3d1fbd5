"""
OpenAI's GPT-2 weights, from the Hugging Face format into a minigpt2 checkpoint, and back.

    python hf_import.py gpt2                         # download GPT-2 (124M) -> checkpoints/gpt2
    python hf_import.py gpt2-xl --out_dir models/xl  # also gpt2-medium, gpt2-large, distilgpt2
    python hf_import.py path/to/dir                  # files from elsewhere: config.json + weights
    python hf_import.py path/to/pytorch_model.bin    #   (or a weight file, config.json beside it)
    python hf_import.py --export out/book --out_dir hf_model   # ours -> the Hugging Face layout

The conversion (first in this file, hf_to_ours) is nearly a copy, because model.py uses GPT-2's own
names:
  - Hugging Face's GPT-2 keeps OpenAI's original "Conv1D" layers, which store their weight as
    [in, out]; ours are nn.Linear, [out, in]. So exactly four weights per block are transposed:
    attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj. Every other tensor is copied as is, same name.
  - Keys may come with or without the "transformer." prefix (GPT2LMHeadModel vs GPT2Model files).
  - attn.bias / attn.masked_bias are the causal-mask buffers some files carry: not weights, skipped.
  - lm_head.weight is the token embedding (weight tying); a file that stores it must have it equal
    to wte.weight.
  - Every tensor's shape is checked against config.json, and so is their number (148 for gpt2).
The export (--export) is the same mapping backwards: a GPT2LMHeadModel, or for a classifier a
GPT2ForSequenceClassification with its label names, both loaded by transformers' from_pretrained,
with GPT-2's tokenizer files (vocab.json, merges.txt) when the model uses that tokenizer.
Downloads (ring/download.py: resumable, checked against the hub's sha256, MINIGPT2_HF_ENDPOINT for
a mirror) and the rules for output directories (nothing replaced that this script did not write)
come after the conversion; docs/hub.md has the whole story.
"""

import json
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model import GPTConfig, model_from_state, tensor_shapes
from train import load_model
from ring.checkpoint import (CheckpointInfo, check_shape, find_checkpoint, save_checkpoint,
                             write_directory)
from ring.config import UserError, check_settings, parse_config, run_main, setting
from ring.download import BPE_DIR, DEFAULT_ENDPOINT, HUB_MODELS, download_from_hub, hub_endpoint
from ring.files import check_output_dir, read_json
from ring.rundir import is_checkpoint

CHECKPOINTS = Path("checkpoints")  # where imported models go: checkpoints/<name>

# --------------------------------------------------------------------------------------------------
# The conversion, both ways

# The four layers that Hugging Face stores as Conv1D, weights [in, out] (nn.Linear's: [out, in]).
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Causal-mask buffers that older transformers versions saved along with the weights. They are not
# learned: our attention builds its mask on the fly.
MASK_BUFFERS = ("attn.bias", "attn.masked_bias")


def our_name(hf_key):
    """The name of a Hugging Face tensor in our model, or None for a mask buffer (not a weight)."""
    if ".".join(hf_key.split(".")[-2:]) in MASK_BUFFERS:  # h.3.attn.bias, not h.3.attn.c_attn.bias
        return None
    if hf_key.startswith(("transformer.", "lm_head.", "score.")):
        return hf_key
    return "transformer." + hf_key  # a GPT2Model file (like OpenAI's gpt2 on the hub): no prefix


def hf_to_ours(hf_state, config, where):
    """Our model, from a Hugging Face GPT-2 state dict and our config (config_from_hf's). First the
    conversion: each tensor renamed, the four Conv1D weights transposed, all in float32 (the
    precision we train in; autocast lowers it where it pays). Then what is refused: a name given
    twice (with and without the "transformer." prefix), an lm_head.weight that is not wte.weight
    (GPT-2 ties them, and so does this model), and any tensor missing, unknown or of another shape
    than config implies (model.model_from_state checks those)."""
    state = {}
    for key, tensor in hf_state.items():
        name = our_name(key)
        if name is None:
            continue  # a causal-mask buffer
        if name.endswith(TRANSPOSED):
            tensor = tensor.t()  # Conv1D [in, out] -> nn.Linear [out, in]
        if name in state:
            raise UserError(f"{where}: {key!r} appears twice (with and without the "
                            "'transformer.' prefix)")
        state[name] = tensor.to(torch.float32).contiguous()
    head, wte = state.pop("lm_head.weight", None), state.get("transformer.wte.weight")
    if head is not None and (wte is None or not torch.equal(head, wte)):
        raise UserError(f"{where}: lm_head.weight differs from wte.weight; GPT-2 ties them and so "
                        "does this model")
    try:
        return model_from_state(config, state)
    except ValueError as e:
        raise UserError(f"{where}: {e}; this is not a GPT-2 of the shape its config.json "
                        "gives") from None


def ours_to_hf(state, config):
    """Our tensors (as in a checkpoint's model.safetensors: our names, no lm_head) in the Hugging
    Face GPT-2 layout: "transformer." names, Conv1D weights [in, out]. GPT-2 always has biases; a
    model trained here with bias=False computes what the same model with zero biases computes, so
    those are written as zeros."""
    hf = {}
    for name, shape in tensor_shapes(replace(config, bias=True)).items():  # all that GPT-2 has
        assert name in state or (not config.bias and name.endswith("bias")), name
        tensor = (state[name] if name in state else
                  torch.zeros(shape, dtype=state["transformer.wte.weight"].dtype))
        if name.endswith(TRANSPOSED):
            tensor = tensor.t()  # nn.Linear [out, in] -> Conv1D [in, out]
        hf[name] = tensor.contiguous()
    return hf


# --------------------------------------------------------------------------------------------------
# config.json, both ways


def config_from_hf(hf, path):
    """Our GPTConfig and the label names (None for a language model) from a Hugging Face
    config.json. Only what our model computes is accepted: GPT-2's own architecture, any size. A
    missing size field takes transformers' GPT2Config default, as transformers itself would."""
    if not isinstance(hf, dict):
        raise UserError(f"{path} is not a model config (a JSON object)")
    if hf.get("model_type") != "gpt2":
        raise UserError(f"{path}: model_type is {hf.get('model_type')!r}, not 'gpt2'; only GPT-2 "
                        "models can be imported")
    # (our name, config.json's name, transformers' default), checked as our own checkpoints' are
    names = [("block_size", "n_positions" if "n_positions" in hf else "n_ctx", 1024),
             ("vocab_size", "vocab_size", 50257), ("n_layer", "n_layer", 12),
             ("n_head", "n_head", 12), ("n_embd", "n_embd", 768)]
    sizes = check_shape({key: hf.get(name, default) for key, name, default in names}, path)
    _refuse_other_computations(hf, sizes["n_embd"], path)
    labels = _labels(hf, sizes, path)
    # dropout 0: a checkpoint is for inference until a training run sets its own dropout.
    config = GPTConfig(**{**sizes, "dropout": 0.0, "bias": True,
                          "n_classes": len(labels) if labels else 0})
    return config, labels


def _refuse_other_computations(hf, n_embd, path):
    """Refuse options that would make a GPT-2 compute something our model does not. gelu_new is the
    tanh approximation of GELU that GPT-2 was trained with; gelu_pytorch_tanh is the same, fused."""
    gelu = hf.get("activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh")
    refuse = {
        "activation_function": (gelu, "gelu_new"),
        "layer_norm_epsilon": (hf.get("layer_norm_epsilon", 1e-5) == 1e-5, 1e-5),
        "n_inner": (hf.get("n_inner") in (None, 4 * n_embd), "null (4 * n_embd)"),
        "scale_attn_weights": (hf.get("scale_attn_weights", True) is True, True),
        "scale_attn_by_inverse_layer_idx": (not hf.get("scale_attn_by_inverse_layer_idx"), False),
        "add_cross_attention": (hf.get("add_cross_attention", False) is False, False),
        "tie_word_embeddings": (hf.get("tie_word_embeddings", True) is True, True),
    }
    for key, (ok, wanted) in refuse.items():
        if not ok:
            raise UserError(f"{path}: {key} is {hf[key]!r}; GPT-2 (and this model) has {wanted}, "
                            "so it cannot be imported")


def _labels(hf, sizes, path):
    """A classifier's label names, from id2label (keys are strings in JSON); None for a GPT."""
    architectures = hf.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise UserError(f"{path}: architectures must be a list of names, not {architectures!r:.60}")
    if "GPT2ForSequenceClassification" not in architectures:
        return None
    id2label = hf.get("id2label") or {}
    if not isinstance(id2label, dict):
        raise UserError(f"{path}: id2label must be an object of label names, not {id2label!r:.60}")
    n = check_shape({**sizes, "n_classes": len(id2label) or hf.get("num_labels", 2)},
                    path)["n_classes"]
    return [str(id2label.get(str(i), f"LABEL_{i}")) for i in range(n)]


def hf_config(config, info):
    """config.json for transformers' GPT2Config, from our config and CheckpointInfo."""
    gpt2_tokens = info.tokenizer["type"] == "gpt2"
    kind = "GPT2ForSequenceClassification" if config.n_classes else "GPT2LMHeadModel"
    out = {
        "architectures": [kind], "model_type": "gpt2", "vocab_size": config.vocab_size,
        # n_ctx: the old name of n_positions, still read by some tools; n_inner None: 4 * n_embd
        "n_positions": config.block_size, "n_ctx": config.block_size,
        "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head,
        "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "initializer_range": 0.02, "scale_attn_weights": True, "tie_word_embeddings": True,
        "minigpt2_export": True,  # marks what this script wrote: --force replaces nothing else
    }
    if gpt2_tokens:
        out.update(bos_token_id=50256, eos_token_id=50256)  # <|endoftext|>
    else:
        # transformers has no tokenizer for a vocabulary made here (e.g. characters): keep ours, for
        # the model to be imported back with it and for a reader of config.json to decode outputs.
        out["minigpt2_tokenizer"] = info.tokenizer
    if config.n_classes:
        out["id2label"] = {str(i): label for i, label in enumerate(info.labels)}
        out["label2id"] = {label: i for i, label in enumerate(info.labels)}
        if gpt2_tokens:
            # GPT2ForSequenceClassification reads the last token that is not padding; GPT-2 has no
            # pad token and <|endoftext|> is the usual stand-in (needed for batches of texts).
            out["pad_token_id"] = 50256
    return out


# --------------------------------------------------------------------------------------------------
# Reading a model in the Hugging Face layout


def read_config(path):
    if not Path(path).is_file():
        raise UserError(f"{path} not found (a Hugging Face model directory has config.json next to "
                        "its weights)")
    return read_json(path)


def weight_files(directory):
    """The weight files of a Hugging Face model directory: one, or the shards index.json lists."""
    directory = Path(directory)
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (directory / single).is_file():
            return [directory / single]
        if (directory / index).is_file():
            weight_map = read_json(directory / index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise UserError(f"{directory / index} has no weight_map")
            return [directory / str(name) for name in sorted(set(weight_map.values()))]
    raise UserError(f"no weights in {directory}: expected model.safetensors (or pytorch_model.bin) "
                    "next to config.json")


def load_tensors(path):
    """{name: tensor} from a .safetensors file, or from a PyTorch .bin file read with
    weights_only=True (which refuses to run code that a pickle could otherwise carry)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise UserError(f"{path} is not a readable safetensors file ({e}); it is truncated or "
                            "corrupt: download it again") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails in many ways (UnpicklingError, EOFError...)
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a readable PyTorch weights file ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a dict of tensors (a state_dict)")
    return state


def read_hf(source):
    """(config dict, our GPTConfig, label names or None, {name: tensor}, where: what messages
    about the weights name) of a local Hugging Face model: a directory, or one weight file with
    config.json beside it. The config is checked before the (maybe large) weights are read."""
    source = Path(source)
    directory = source if source.is_dir() else source.parent
    hf = read_config(directory / "config.json")
    config, labels = config_from_hf(hf, directory / "config.json")
    files = weight_files(directory) if source.is_dir() else [source]
    state = {name: tensor for f in files for name, tensor in load_tensors(f).items()}
    return hf, config, labels, state, files[0] if len(files) == 1 else directory


# --------------------------------------------------------------------------------------------------
# Import, export, and what train.py calls

EXPORT_FILES = {"config.json", "model.safetensors", "vocab.json", "merges.txt"}
IMPORT_FILES = {"config.json", "model.safetensors", "SHA256SUMS"}


def imported_from(directory):
    """The source recorded in a checkpoint this script imported, or None."""
    config = Path(directory) / "config.json"
    return json.loads(config.read_text()).get("source") if is_checkpoint(directory) else None


def is_earlier_import(directory):
    names = {p.name for p in Path(directory).iterdir()}
    return imported_from(directory) is not None and names <= IMPORT_FILES


def is_earlier_export(directory):
    names = {p.name for p in Path(directory).iterdir()}
    try:
        marked = json.loads((Path(directory) / "config.json").read_text()).get("minigpt2_export")
    except (OSError, ValueError, AttributeError):
        return False
    return marked is True and names <= EXPORT_FILES


def hub_name(source):
    """Our short name for a released GPT-2 given by short name or hub id, or None."""
    return next((name for name, repo_id in HUB_MODELS.items() if source in (name, repo_id)), None)


def describe_source(source):
    """(what to record as the source, default output name) of a SOURCE argument, or a UserError."""
    path = Path(source)
    if path.exists():
        if path.is_dir() and any(is_checkpoint(d) for d in (path, path / "best", path / "last")):
            raise UserError(f"{path} is already a minigpt2 checkpoint: nothing to import (--export "
                            "converts it to the HF layout)")
        directory = path if path.is_dir() else path.parent
        return str(path.resolve()), directory.resolve().name
    name = hub_name(source)
    if name is None:
        raise UserError(f"unknown model '{source}': not a file or directory, nor one of "
                        f"{', '.join(HUB_MODELS)}; for another GPT-2 model, download its "
                        "config.json and model.safetensors and pass their directory")
    return HUB_MODELS[name], name


def prune_empty(directory, top):
    """Remove directory, then its parents up to top (included), as long as they are empty: a failed
    first download should not leave a tree of empty folders behind."""
    directory, top = Path(directory), Path(top)
    while directory == top or top in directory.parents:
        try:
            directory.rmdir()  # fails unless empty
        except OSError:
            return
        directory = directory.parent


def import_hf(source, out_dir=None, *, endpoint=None, checkpoints_dir=CHECKPOINTS, force=False,
              keep_download=False):
    """Import a GPT-2 into a checkpoint directory of ours and return its path. source: a released
    model's name (gpt2, ..., or its hub id), or a local Hugging Face directory or weight file.
    out_dir: default checkpoints_dir/<name>; if it already holds this import it is returned as is
    (unless force)."""
    recorded, name = describe_source(source)
    out_dir = Path(out_dir) if out_dir is not None else Path(checkpoints_dir) / name
    if not force and imported_from(out_dir) == recorded:
        print(f"{out_dir} already holds {source}; nothing to do (--force converts "
              "again)", file=sys.stderr)
        return out_dir
    check_output_dir(out_dir, is_earlier_import, force)
    cache = None
    if Path(source).exists():
        local = Path(source)
    else:
        cache = Path(checkpoints_dir) / ".hf" / HUB_MODELS[name]
        try:
            local = download_from_hub(name, hub_endpoint(endpoint), cache,
                                      check_config=lambda p: config_from_hf(read_config(p), p))
        except UserError:
            prune_empty(cache, checkpoints_dir)  # keeps a .part file (and its folders) to resume
            raise
    try:
        hf, config, labels, hf_state, where = read_hf(local)
        model = hf_to_ours(hf_state, config, where)
    except UserError:
        if cache is not None:  # a damaged download (maybe unchecked): fetch it anew next time
            shutil.rmtree(cache, ignore_errors=True)
            prune_empty(cache.parent, checkpoints_dir)
        raise
    # A model exported from here keeps its tokenizer in config.json (hf_config); GPT-2 has GPT-2's.
    info = CheckpointInfo(config, task="cls" if labels else "lm", labels=labels, source=recorded,
                          tokenizer=hf.get("minigpt2_tokenizer") or {"type": "gpt2"})
    save_checkpoint(out_dir, model, info)  # a temporary directory, then renamed: all or nothing
    print(f"imported {source} ({model.num_params() / 1e6:.1f}M parameters, {len(hf_state)} "
          f"tensors) into {out_dir}", file=sys.stderr)
    if cache is not None and not keep_download:
        shutil.rmtree(cache, ignore_errors=True)  # the checkpoint has it all: no second copy
        prune_empty(cache.parent, checkpoints_dir)
    return out_dir


def export_hf(checkpoint, out_dir, force=False):
    """Write a checkpoint of ours (or a run directory: its best/, else last/) as a Hugging Face
    GPT-2 directory: config.json, model.safetensors, and GPT-2's tokenizer files if it uses them."""
    directory = find_checkpoint(checkpoint)
    check_output_dir(out_dir, is_earlier_export, force)
    model, info = load_model(directory)
    config_json = hf_config(model.config, info)
    tensors = ours_to_hf(model.state_dict(), model.config)
    # transformers' vocab.json and merges.txt are OpenAI's encoder.json and vocab.bpe, renamed.
    tokenizer_files = ({"vocab.json": BPE_DIR / "encoder.json", "merges.txt": BPE_DIR / "vocab.bpe"}
                       if info.tokenizer["type"] == "gpt2" else {})

    def fill(tmp):
        # transformers refuses a safetensors file without save_pretrained's {"format": "pt"}.
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config_json, indent=2))
        for target, source in tokenizer_files.items():
            shutil.copyfile(source, tmp / target)

    write_directory(out_dir, fill)
    kind = config_json["architectures"][0]
    print(f"exported {directory} as a {kind} into {out_dir}", file=sys.stderr)
    if not tokenizer_files:
        print("note: no tokenizer files written (the model does not use GPT-2's tokenizer)",
              file=sys.stderr)
    return Path(out_dir)


def resolve_pretrained(name_or_path, checkpoints_dir=CHECKPOINTS, endpoint=None):
    """The checkpoint directory for train.py's --init_from (and finetune.py's):

    - a directory of ours (a checkpoint, or a run directory with best/ or last/): returned as is;
    - a Hugging Face directory or weight file: converted into checkpoints/<its name> on first use;
    - a released GPT-2's name: downloaded and converted into checkpoints/<name> on first use."""
    path = Path(name_or_path)
    if path.is_dir() and not (path / "config.json").is_file():
        return find_checkpoint(path)  # a run directory: best/ or last/
    if path.is_dir() and is_checkpoint(path):
        return path
    recorded, name = describe_source(name_or_path)  # or the "unknown model" error
    out = Path(checkpoints_dir) / name
    if not path.exists():  # a released GPT-2's name
        return out if is_checkpoint(out) else import_hf(name, out, endpoint=endpoint,
                                                        checkpoints_dir=checkpoints_dir)
    if imported_from(out) == recorded:
        return out
    if out.exists():
        raise UserError(f"{out} already exists and was not imported from {path}; convert it "
                        f"with python hf_import.py {path} --out_dir DIR and use DIR")
    return import_hf(name_or_path, out, endpoint=endpoint, checkpoints_dir=checkpoints_dir)


# --------------------------------------------------------------------------------------------------
# Command line


def main(argv=None):
    args = parse_config(ImportSettings, argv, description=__doc__, prog="hf_import.py")
    if args.export:
        export_hf(args.export, args.out_dir or "hf_model", force=args.force)
        return
    out = import_hf(args.source, args.out_dir or None, endpoint=args.endpoint or None,
                    force=args.force, keep_download=args.keep_download)
    cls = load_model(out)[1].task == "cls"
    what = '--text "A text to classify"' if cls else '--start "The old house"'
    print(f"try: python sample.py --out_dir {out} {what}", file=sys.stderr)


@dataclass
class ImportSettings:
    source: str = setting(f"what to import: {', '.join(HUB_MODELS)} (or a hub id such as "
                          f"{HUB_MODELS['gpt2']}), or a local directory / weight file in the HF "
                          "layout", "")
    export: str = setting("export this checkpoint (or run directory) of ours to the Hugging Face "
                          "layout", "")
    out_dir: str = setting("where to write (empty: checkpoints/<name> for an import, hf_model for "
                           "--export)", "")
    force: bool = setting("replace --out_dir if it holds an earlier import or export (never "
                          "anything else)", False)
    keep_download: bool = setting("keep the downloaded files under checkpoints/.hf/ after a "
                                  "successful import", False)
    endpoint: str = setting("the hub's base URL (empty: $MINIGPT2_HF_ENDPOINT, $HF_ENDPOINT or "
                            f"{DEFAULT_ENDPOINT})", "")

    POSITIONAL = ("source",)

    def __post_init__(self):
        check_settings(self)
        if bool(self.source) == bool(self.export):
            raise UserError("give either a SOURCE to import or --export CKPT_DIR")


if __name__ == "__main__":
    run_main(main)
