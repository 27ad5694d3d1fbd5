"""hf_import.py: GPT-2 from the Hugging Face format and back, checked against transformers (a test-only
dependency), and the download path against a local HTTP server standing in for the hub. No internet needed."""

import hashlib
import http.server
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (AutoTokenizer, GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel,
                          GPT2Tokenizer)

import hf_import
from data import GPT2Tokenizer as OurGPT2Tokenizer
from hf_import import export_hf, hf_to_ours, import_hf, main, ours_to_hf, resolve_pretrained
from model import tensor_shapes
from train import load_model
from model import GPT, GPTClassifier, GPTConfig
from sample import generate
from ring.checkpoint import save_checkpoint
from ring.config import UserError, run_main
from ring.download import download
from conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=101, n_positions=48)


def perturb_vectors(model, seed=0):
    """Random biases and LayerNorm gains. Fresh models have zero biases and unit gains, and a conversion that
    mixed those up would go unnoticed; the matrices are random already."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def random_hf_model(seed=0, **shape):
    """A randomly initialised transformers GPT2LMHeadModel of the given shape."""
    torch.manual_seed(seed)
    special = {} if shape.get("vocab_size", 50257) > 50256 else dict(bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(GPT2Config(**shape, **special))
    perturb_vectors(model, seed)
    return model.eval()


def assert_same_lm(ours, theirs, seed=0):
    """Same logits (max abs difference <= 1e-4 in float32) and the same 20-token greedy continuation."""
    ours.eval()
    cfg = ours.config
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(cfg.vocab_size, (2, min(cfg.block_size, 12)), generator=g)
    with torch.no_grad():
        a, _ = ours(ids, targets=ids)
        b = theirs(ids).logits
    assert (a - b).abs().max().item() <= 1e-4

    # Greedy decoding takes the argmax given the text so far. If the reference's argmax after every prefix of our
    # continuation is our next token, its own greedy run gives the same 20 tokens (by induction), so one forward
    # pass of the reference checks them all.
    prompt = ids[:1, :5]
    out = generate(ours, prompt, 20, temperature=0)  # with the KV cache, as sample.py runs it
    assert out.shape == (1, 25)
    with torch.no_grad():
        reference = theirs(out[:, :-1]).logits
    assert torch.equal(reference.argmax(-1)[:, 4:], out[:, 5:])


def save_hf(model, directory, **kwargs):
    model.save_pretrained(directory, **kwargs)
    return Path(directory)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    """A tiny random transformers model saved in the HF layout once for the module: (model, directory)."""
    model = random_hf_model(**TINY)
    return model, save_hf(model, tmp_path_factory.mktemp("hf") / "tiny")


def copy_dir(src, dst):
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------------------------------------
# Parity with transformers, both ways


@pytest.mark.parametrize("shape", [
    TINY,
    dict(n_layer=3, n_head=4, n_embd=64, vocab_size=503, n_positions=40),
    dict(n_layer=1, n_head=3, n_embd=48, vocab_size=50257, n_positions=64),  # GPT-2's vocabulary, odd head count
], ids=["2x32", "3x64", "1x48-gpt2vocab"])
def test_import_and_export_match_transformers(tmp_path, shape):
    theirs = random_hf_model(**shape)
    ckpt = import_hf(str(save_hf(theirs, tmp_path / "hf")), tmp_path / "ckpt")
    ours, info = load_model(ckpt)
    assert info.tokenizer == {"type": "gpt2"} and info.task == "lm"
    assert info.source == str((tmp_path / "hf").resolve())
    assert_same_lm(ours, theirs)

    export_hf(ckpt, tmp_path / "back")
    back, loading = GPT2LMHeadModel.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"] and not loading["mismatched_keys"]
    assert_same_lm(ours, back.eval())


def test_gpt2_124M_shape_matches_transformers(tmp_path):
    theirs = random_hf_model()  # GPT2Config's defaults are GPT-2 small: 12 layers, 768 wide, 1024 positions
    ckpt = import_hf(str(save_hf(theirs, tmp_path / "hf")), tmp_path / "gpt2")
    ours, _ = load_model(ckpt)
    assert ours.config == GPTConfig()  # 124M, dropout 0
    assert len(load_file(ckpt / "model.safetensors")) == 148
    assert_same_lm(ours, theirs)

    del theirs
    export_hf(ckpt, tmp_path / "back")
    back, loading = GPT2LMHeadModel.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"]
    ids = torch.randint(50257, (1, 8))
    with torch.no_grad():
        assert (ours(ids, targets=ids)[0] - back.eval()(ids).logits).abs().max().item() <= 1e-4


def test_official_layout_of_gpt2_has_148_weights():
    """OpenAI's gpt2 on the hub is a GPT2Model file: no "transformer." prefix, and a causal-mask buffer per block.
    Checked at full size on the meta device (shapes only, no memory)."""
    config = GPTConfig()
    ours = {k: torch.empty(shape, device="meta") for k, shape in tensor_shapes(config).items()}
    hf = {k.removeprefix("transformer."): v for k, v in ours_to_hf(ours, config).items()}
    for i in range(config.n_layer):
        hf[f"h.{i}.attn.bias"] = torch.empty(1, 1, 1024, 1024, device="meta")
        hf[f"h.{i}.attn.masked_bias"] = torch.empty((), device="meta")
    assert len(hf) == 148 + 24
    assert hf["h.0.attn.c_attn.weight"].shape == (768, 2304)  # Conv1D: [in, out]
    model = hf_to_ours(hf, config, "gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight  # tied again
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    assert len(state) == 148
    assert state["transformer.h.0.attn.c_attn.weight"].shape == (2304, 768)  # nn.Linear: [out, in]
    assert state["transformer.h.11.mlp.c_proj.weight"].shape == (768, 3072)


def test_pytorch_bin_in_the_official_layout_and_sharded_safetensors(tmp_path, tiny_hf):
    theirs, _ = tiny_hf
    # pytorch_model.bin as older uploads have it: no prefix, mask buffers, and the (tied) lm_head stored too
    official = tmp_path / "official"
    official.mkdir()
    shutil.copy(tiny_hf[1] / "config.json", official)
    state = {k.removeprefix("transformer."): v.clone() for k, v in theirs.state_dict().items()}
    assert "lm_head.weight" in state
    for i in range(TINY["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, 48, 48).tril()
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, official / "pytorch_model.bin")
    for source in (official, official / "pytorch_model.bin"):  # the directory, or the file itself
        ours, _ = load_model(import_hf(str(source), tmp_path / "from-bin", force=True))
        assert_same_lm(ours, theirs)

    sharded = save_hf(theirs, tmp_path / "sharded", max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    ours, _ = load_model(import_hf(str(sharded), tmp_path / "from-shards"))
    assert_same_lm(ours, theirs)


def test_export_of_a_classifier_loads_as_gpt2_for_sequence_classification(tmp_path):
    torch.manual_seed(0)
    model = GPTClassifier(GPTConfig(block_size=32, vocab_size=50257, n_layer=2, n_head=2, n_embd=32, n_classes=3))
    perturb_vectors(model)
    labels = ["negative", "neutral", "positive"]
    save_checkpoint(tmp_path / "cls", model, {"tokenizer": {"type": "gpt2"}, "task": "cls", "labels": labels})
    export_hf(tmp_path / "cls", tmp_path / "hf")

    theirs, loading = GPT2ForSequenceClassification.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"]
    assert theirs.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert theirs.config.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    # A right-padded batch: transformers reads the last token that is not <|endoftext|>, we the true length.
    ids = torch.randint(50256, (3, 10))
    lengths = torch.tensor([10, 7, 3])
    for row, n in enumerate(lengths.tolist()):
        ids[row, n:] = 50256
    with torch.no_grad():
        ours = model.eval()(ids, lengths)[0]
        reference = theirs.eval()(ids).logits
    assert (ours - reference).abs().max().item() <= 1e-4

    # the GPT-2 tokenizer files come along, so AutoTokenizer works on the export
    assert AutoTokenizer.from_pretrained(tmp_path / "hf").encode("Hello world") == [15496, 995]

    # and back again: the labels and the task survive the round trip
    again, info = load_model(import_hf(str(tmp_path / "hf"), tmp_path / "again"))
    assert info.task == "cls" and info.labels == labels
    with torch.no_grad():
        assert torch.equal(again.eval()(ids, lengths)[0], ours)


def test_export_of_a_char_model_without_biases(tmp_path):
    """bias=False exports as zero biases (the same function); the char vocabulary is kept for the way back."""
    model = GPT(tiny_config(bias=False))
    chars = "".join(chr(ord("a") + i) for i in range(26)) + " .,;:!?'\n-("
    assert len(chars) == model.config.vocab_size
    save_checkpoint(tmp_path / "char", model, {"tokenizer": {"type": "char", "chars": chars}, "task": "lm"})
    export_hf(tmp_path / "char", tmp_path / "hf")
    assert not (tmp_path / "hf" / "vocab.json").exists()
    theirs = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(37, (2, 16))
    with torch.no_grad():
        assert (model.eval()(ids, targets=ids)[0] - theirs(ids).logits).abs().max().item() <= 1e-4
    _, info = load_model(import_hf(str(tmp_path / "hf"), tmp_path / "again"))
    assert info.tokenizer == {"type": "char", "chars": chars}


# ----------------------------------------------------------------------------------------------------------
# The tokenizer


def varied_strings(n=300, seed=0):
    pieces = [
        "Hello", " world", "don't", "I'M", "we'll", "they're", "it's", "y'all", "'s", "''", "O'Neil's", "can't've",
        " ", "  ", "   ", "\t", "\n", "\n\n", " \n ", "\r\n", "\u00a0", "\u3000", "\u200b",
        "café", "naïve", "Straße", "ﬁne", "e\u0301", "日本語", "中文字符", "한국어", "Привет", "مرحبا", "שלום",
        "🤗", "👩‍👩‍👧", "🇫🇷", "∑x²", "1234567", "3.14159", "$100", "2024-01-01", "—", "…", "«»",
        "def f(x):\n    return x", "<html>", "http://example.com/a?b=c", "  leading", "trailing  ", "ALL CAPS",
        "MiXeD", "123abc", "a1b2", "!!!", "???", "...", "--", "__init__", "\\", '"quoted"', "\x00", "\x7f",
    ]
    rng = random.Random(seed)
    out = list(pieces) + ["", " ", "    ", "\n\n\n\n", " \t \n", "a  b   c    d"]
    while len(out) < n:
        if rng.random() < 0.8:
            out.append("".join(rng.choice(pieces) for _ in range(rng.randint(2, 8))))
        else:  # random code points: Latin, Greek, Cyrillic, CJK, symbols, emoji (no surrogates)
            lo, hi = rng.choice([(0x20, 0x24F), (0x370, 0x4FF), (0x2000, 0x2BFF), (0x4E00, 0x4FFF), (0x1F300, 0x1F6FF)])
            out.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 12))))
    return out


def test_gpt2_tokenizer_matches_transformers(tmp_path):
    """data.GPT2Tokenizer (tiktoken) and transformers' GPT2Tokenizer, both from the same encoder.json and
    vocab.bpe (transformers calls them vocab.json and merges.txt), give the same ids.
    (<|endoftext|> is left out on purpose: transformers reads it as the special token, we as plain text.)"""
    from ring.download import BPE_DIR

    shutil.copy(BPE_DIR / "encoder.json", tmp_path / "vocab.json")
    shutil.copy(BPE_DIR / "vocab.bpe", tmp_path / "merges.txt")
    theirs = GPT2Tokenizer.from_pretrained(tmp_path)
    ours = OurGPT2Tokenizer()
    strings = varied_strings()
    assert len(strings) >= 300
    for s in strings:
        ids = ours.encode(s)
        assert ids == theirs.encode(s, add_special_tokens=False), repr(s)
        assert ours.decode(ids) == s


# ----------------------------------------------------------------------------------------------------------
# Downloads, against a local stand-in for the hub


class FakeHub:
    """huggingface.co on 127.0.0.1: the file list /api/models/<id>/tree/main, and /<id>/resolve/main/<file>,
    which redirects (as the hub does for large files) to /cdn/<id>/<file>, served with HTTP Range support."""

    def __init__(self, root):
        self.root = Path(root)  # root/<repo id>/<file>
        self.api = True  # False: the file list answers 404
        self.wrong_sha256 = False  # the file list gives a wrong sha256
        self.cut = {}  # file name -> bytes sent before the connection drops (once)
        self.padding = {}  # file name -> bytes sent after the file (more than the list says)
        self.requests = []  # (path, Range header, status)
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body=b"", headers=()):
                hub.requests.append((self.path, self.headers.get("Range"), status))
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                return body

            def do_GET(self):
                if m := re.fullmatch(r"/api/(models|datasets)/(.+)/tree/main", self.path):
                    repo = hub.root / ("datasets/" if m.group(1) == "datasets" else "") / m.group(2)
                    if not hub.api or not repo.is_dir():
                        return self.wfile.write(self.reply(404))
                    listing = []
                    for f in sorted(repo.iterdir()):
                        entry = {"type": "file", "path": f.name, "size": f.stat().st_size}
                        if f.suffix in (".safetensors", ".bin"):  # LFS files: sha256 of the content
                            sha = "0" * 64 if hub.wrong_sha256 else hashlib.sha256(f.read_bytes()).hexdigest()
                            entry["lfs"] = {"oid": sha, "size": f.stat().st_size, "pointerSize": 134}
                        listing.append(entry)
                    return self.wfile.write(self.reply(200, json.dumps(listing).encode()))
                if m := re.fullmatch(r"/(.+)/resolve/main/(.+)", self.path):
                    return self.wfile.write(self.reply(302, headers=[("Location", f"/cdn/{m.group(1)}/{m.group(2)}")]))
                if self.path.startswith("/cdn/") and (hub.root / self.path[5:]).is_file():
                    data = (hub.root / self.path[5:]).read_bytes()
                    data += b"\0" * hub.padding.get(Path(self.path).name, 0)
                    start, status, headers = 0, 200, []
                    if r := self.headers.get("Range"):
                        start = int(re.fullmatch(r"bytes=(\d+)-", r).group(1))
                        if start >= len(data):
                            return self.wfile.write(self.reply(416))
                        status, headers = 206, [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")]
                    body = self.reply(status, data[start:], headers)  # Content-Length: the whole remainder
                    cut = hub.cut.pop(Path(self.path).name, None)
                    self.wfile.write(body if cut is None else body[:cut])  # then the connection closes
                    return
                self.wfile.write(self.reply(404))

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def cdn_requests(self, name):
        return [(r, s) for p, r, s in self.requests if p.startswith("/cdn/") and p.endswith("/" + name)]


@pytest.fixture
def hub(tmp_path, tiny_hf, monkeypatch):
    """The fake hub serving the tiny model as openai-community/gpt2, and MINIGPT2_HF_ENDPOINT pointing at it."""
    repo = tmp_path / "hub" / "openai-community" / "gpt2"
    repo.parent.mkdir(parents=True)
    shutil.copytree(tiny_hf[1], repo)
    hub = FakeHub(tmp_path / "hub")
    monkeypatch.setenv("MINIGPT2_HF_ENDPOINT", hub.url)
    for var in ("no_proxy", "NO_PROXY"):  # urllib honours http_proxy: never send 127.0.0.1 through a proxy
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    yield hub
    hub.server.shutdown()
    hub.server.server_close()


def test_download_from_the_hub_checks_and_converts(tmp_path, hub, tiny_hf):
    ckpts = tmp_path / "checkpoints"
    out = resolve_pretrained("gpt2", checkpoints_dir=ckpts)  # what train.py --init_from=gpt2 does
    assert out == ckpts / "gpt2"
    ours, info = load_model(out)
    assert info.source == "openai-community/gpt2"
    assert_same_lm(ours, tiny_hf[0])
    assert sorted(p.name for p in ckpts.iterdir()) == ["gpt2"]  # the download is removed once converted
    assert hub.cdn_requests("model.safetensors") == [(None, 200)]

    hub.requests.clear()
    assert resolve_pretrained("gpt2", checkpoints_dir=ckpts) == out  # imported on first use only
    assert hub.requests == []


def test_interrupted_download_resumes(tmp_path, hub, tiny_hf):
    ckpts = tmp_path / "checkpoints"
    size = (hub.root / "openai-community" / "gpt2" / "model.safetensors").stat().st_size
    hub.api = False  # no file list: nothing to compare the size with but the server's Content-Length
    hub.cut["model.safetensors"] = size // 3
    with pytest.raises(UserError, match=r"stopped after \d+ of \d+ bytes; run again to resume"):
        import_hf("gpt2", checkpoints_dir=ckpts)
    part = ckpts / ".hf" / "openai-community" / "gpt2" / "model.safetensors.part"
    assert part.stat().st_size == size // 3
    assert not (ckpts / "gpt2").exists()

    hub.api = True  # the second attempt has the size and sha256 to check the joined file against
    out = import_hf("openai-community/gpt2", checkpoints_dir=ckpts)  # the hub id works as well as the name
    assert out == ckpts / "gpt2"
    assert hub.cdn_requests("model.safetensors") == [(None, 200), (f"bytes={size // 3}-", 206)]
    assert_same_lm(load_model(out)[0], tiny_hf[0])


def test_checksum_mismatch_is_refused(tmp_path, hub):
    ckpts = tmp_path / "checkpoints"
    hub.wrong_sha256 = True
    with pytest.raises(UserError, match="model.safetensors failed its sha256 check"):
        import_hf("gpt2", checkpoints_dir=ckpts)
    cache = ckpts / ".hf" / "openai-community" / "gpt2"
    assert not (cache / "model.safetensors").exists() and not (cache / "model.safetensors.part").exists()
    assert not (ckpts / "gpt2").exists()


def test_damaged_download_is_not_kept(tmp_path, hub, tiny_hf):
    """Without a sha256 to check, a damaged file is only noticed when it is read: it is then deleted, so that
    running again downloads it anew instead of failing on the same copy forever."""
    ckpts = tmp_path / "checkpoints"
    served = hub.root / "openai-community" / "gpt2" / "model.safetensors"
    good = served.read_bytes()
    served.write_bytes(good[:2000])
    hub.api = False
    with pytest.raises(UserError, match=r"model.safetensors is not a readable safetensors file .*download it again"):
        import_hf("gpt2", checkpoints_dir=ckpts)
    assert not ckpts.exists()
    served.write_bytes(good)
    assert_same_lm(load_model(import_hf("gpt2", checkpoints_dir=ckpts))[0], tiny_hf[0])


def test_complete_part_file_is_checked_without_a_request(tmp_path, hub):
    source = hub.root / "openai-community" / "gpt2" / "model.safetensors"
    data = source.read_bytes()
    dest = tmp_path / "model.safetensors"
    (tmp_path / "model.safetensors.part").write_bytes(data)  # e.g. killed between the last byte and the rename
    download(f"{hub.url}/openai-community/gpt2/resolve/main/model.safetensors", dest,
             sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    assert dest.read_bytes() == data and hub.requests == []


def test_unreachable_hub_names_the_url_and_the_local_alternative(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MINIGPT2_HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    with pytest.raises(UserError) as e:
        import_hf("gpt2-medium", checkpoints_dir=tmp_path / "checkpoints")
    message = str(e.value)
    assert f"http://127.0.0.1:{port}/openai-community/gpt2-medium/resolve/main/config.json" in message
    assert "python hf_import.py DIR" in message
    assert not (tmp_path / "checkpoints").exists()  # not even empty cache folders


# ----------------------------------------------------------------------------------------------------------
# Bad input: one clear line, nothing written


def edit_config(directory, **changes):
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


def truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


def rewrite_weights(directory, change):
    path = directory / "model.safetensors"
    state = load_file(path)
    change(state)
    save_file(state, path, metadata={"format": "pt"})


def wrong_bin(d):
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip")


def untied_head(d):
    state = {k: v for k, v in load_file(d / "model.safetensors").items()}
    state["lm_head.weight"] = torch.randn_like(state["transformer.wte.weight"])
    (d / "model.safetensors").unlink()
    torch.save(state, d / "pytorch_model.bin")


CLASSIFIER = ["GPT2ForSequenceClassification"]
BAD_INPUTS = {
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "no weights in .*expected model.safetensors"),
    "no config": (lambda d: (d / "config.json").unlink(), r"config.json not found"),
    "not gpt2": (lambda d: edit_config(d, model_type="llama"), r"config.json: model_type is 'llama', not 'gpt2'"),
    "activation": (lambda d: edit_config(d, activation_function="relu"), r"config.json: activation_function is 'relu'"),
    "eps": (lambda d: edit_config(d, layer_norm_epsilon=1e-6), r"config.json: layer_norm_epsilon is 1e-06"),
    "truncated": (lambda d: truncate(d / "model.safetensors", 5000), r"model.safetensors is not a readable safetensors file"),
    "corrupt header": (lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 64), r"model.safetensors is not a readable safetensors"),
    "wrong shape": (lambda d: edit_config(d, n_positions=64),
                    r"do not fit the model's config \(at transformer.wpe.weight: \(48, 32\)\)"),
    "missing tensor": (lambda d: rewrite_weights(d, lambda s: s.pop("transformer.h.1.ln_2.bias")),
                       r"do not fit the model's config \(at transformer.h.1.ln_2.bias: \(32,\)\)"),
    "extra tensor": (lambda d: rewrite_weights(d, lambda s: s.update({"transformer.h.2.ln_1.bias": torch.zeros(32)})),
                     r"do not fit the model's config \(at transformer.h.2.ln_1.bias"),
    "bad pickle": (wrong_bin, r"pytorch_model.bin is not a readable PyTorch weights file"),
    "untied head": (untied_head, r"lm_head.weight differs from wte.weight"),
    # every size in config.json bounded and typed, as in our own checkpoints
    "huge n_layer": (lambda d: edit_config(d, n_layer=10**6),
                     r"config.json: n_layer is 1000000, not an integer in \[1, 1024\]"),
    "string n_embd": (lambda d: edit_config(d, n_embd="32"),
                      r"config.json: n_embd is '32', not an integer in \[1, 65536\]"),
    "string num_labels": (lambda d: edit_config(d, architectures=CLASSIFIER, num_labels="2"),
                          r"config.json: n_classes is '2', not an integer in \[0, 65536\]"),
    "id2label list": (lambda d: edit_config(d, architectures=CLASSIFIER, id2label=["a", "b"]),
                      r"config.json: id2label must be an object of label names"),
    "architectures": (lambda d: edit_config(d, architectures=7),
                      r"config.json: architectures must be a list of names, not 7"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_stops_with_one_line_and_writes_nothing(tmp_path, tiny_hf, case):
    damage, message = BAD_INPUTS[case]
    source = copy_dir(tiny_hf[1], tmp_path / "hf")
    damage(source)
    out = tmp_path / "out" / "model"
    with pytest.raises(UserError, match=message) as e:
        import_hf(str(source), out)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_sizes_are_checked_before_anything_is_built_or_loaded(tmp_path, tiny_hf, monkeypatch):
    source = copy_dir(tiny_hf[1], tmp_path / "hf")
    monkeypatch.setattr(hf_import, "load_file", lambda *a: pytest.fail("weights loaded first"))
    edit_config(source, n_layer=10**6)
    monkeypatch.setattr(hf_import, "model_from_state", lambda *a: pytest.fail("a model was built"))
    with pytest.raises(UserError, match=r"n_layer is 1000000, not an integer in \[1, 1024\]"):
        import_hf(str(source), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_model_id(tmp_path):
    with pytest.raises(UserError, match=r"unknown model 'gpt5'.*gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2"):
        resolve_pretrained("gpt5", checkpoints_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_existing_out_dir_is_not_overwritten_without_force(tmp_path, tiny_hf):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="already exists and holds files this command did not write "
                                        r"\(precious.txt\); choose another --out_dir"):
        import_hf(str(tiny_hf[1]), tmp_path / "out", force=True)  # not even with --force
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"
    # an earlier import is replaced, but only with --force
    import_hf(str(tiny_hf[1]), tmp_path / "ckpt")
    other = copy_dir(tiny_hf[1], tmp_path / "other")
    with pytest.raises(UserError, match="already exists; choose another --out_dir, or pass --force"):
        import_hf(str(other), tmp_path / "ckpt")
    assert load_model(import_hf(str(other), tmp_path / "ckpt", force=True))[1].source == str(other.resolve())


def test_resolve_pretrained_local_directories(tmp_path, tiny_hf):
    ckpts = tmp_path / "checkpoints"
    converted = resolve_pretrained(str(tiny_hf[1]), checkpoints_dir=ckpts)  # an HF directory: converted once
    assert converted == ckpts / "tiny"
    assert resolve_pretrained(str(tiny_hf[1]), checkpoints_dir=ckpts) == converted
    assert resolve_pretrained(str(converted), checkpoints_dir=ckpts) == converted  # ours: as is
    shutil.copytree(converted, tmp_path / "run" / "best")
    assert resolve_pretrained(str(tmp_path / "run"), checkpoints_dir=ckpts) == tmp_path / "run" / "best"


def test_command_line(tmp_path, tiny_hf, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    for needle in ("--export", "--out_dir", "MINIGPT2_HF_ENDPOINT", "gpt2-xl", "distilgpt2", "transposed",
                   "pytorch_model.bin", "sha256", "GPT2ForSequenceClassification"):
        assert needle in help_text

    main([str(tiny_hf[1]), "--out_dir", str(tmp_path / "ckpt")])
    main(["--export", str(tmp_path / "ckpt"), "--out_dir", str(tmp_path / "hf")])
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]

    capsys.readouterr()
    bad = copy_dir(tiny_hf[1], tmp_path / "bad")
    truncate(bad / "model.safetensors", 1000)
    with pytest.raises(SystemExit) as e:
        run_main(lambda: main([str(bad), "--out_dir", str(tmp_path / "never")]))
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "model.safetensors" in err[0]
    assert not (tmp_path / "never").exists()


def test_script_error_has_no_traceback(tmp_path):
    missing = tmp_path / "nowhere" / "pytorch_model.bin"
    missing.parent.mkdir()
    missing.write_bytes(b"")
    r = subprocess.run([sys.executable, str(ROOT / "hf_import.py"), str(missing)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"error: {missing.parent / 'config.json'} not found (a Hugging Face "
                                              "model directory has config.json next to its weights)"]
