"""
See inside a model: one local page that shows what checkpoints do with a prompt.

    python explore.py out/shakespeare_quick               # then open the address it prints
    python explore.py out/run/best out/run/last checkpoints/gpt2 out/cls-tweets --port 8001

The page (explore.html, plain JavaScript) draws what this file computes with the project's own
functions and serves as a small JSON API (Explorer): a prompt's tokens and their losses, the next
token under temperature, top-k and top-p, attention, the logit lens, two checkpoints side by side,
a classifier's decision token by token, the run's metrics.jsonl. docs/explore.md.
"""

import http.server
import json
import math
import random
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import torch
from torch.nn import functional as F

# The project's functions this page shows, all imported here.
from data import pad_batch
from metrics import classify_texts
from model import attention_weights, explicit_attention
from plot import is_number, read_metrics
from sample import check_sampling, load, next_token_probs, prompt_ids, sample_next_token
from ring.checkpoint import find_checkpoint
from ring.config import UserError, check_settings, parse_config, run_main, setting
from ring.files import parse_json
from ring.fastpaths import swap_attention
from ring.runtime import setup_runtime
from ring.tables import classifier_text

PAGE = Path(__file__).with_name("explore.html")
MAX_BODY = 64 * 1024  # bytes in a request: a prompt of 1,024 tokens fits many times over
TOP_N = 20  # next-token candidates shown
CURVES = ("iter", "loss", "lr", "train_loss", "val_loss", "val_accuracy", "val_macro_f1")
# The page's script and style are inline and it fetches only from here: the browser refuses
# anything else, so the page cannot load from (or leak to) the internet, even by mistake.
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "connect-src 'self'; img-src data:")

# --------------------------------------------------------------------------------------------------
# The numbers: functions of a model and token ids


@torch.inference_mode()
def forward_with_attention(model, ids, device):
    """(logits (T, V) in float32, [attention (n_head, T, T) of each layer]) of one pass. For this
    pass only, each attention layer's `attend` keeps its weights (attention_weights): the fused
    kernel, which every other call uses, never materialises them."""
    layers = [m for m in model.modules() if hasattr(m, "attend")]
    usual = [m.attend for m in layers]  # fused, or what ring/fastpaths chose for this hardware
    weights = []

    def recording(q, k, v, dropout_p=0.0):
        # in float32 whatever the model's precision: bf16 rows would sum to 1 only within 1e-2
        weights.append(attention_weights(q.float(), k.float())[0])
        return explicit_attention(q, k, v)

    swap_attention(model, recording)
    try:
        targets = torch.tensor([ids[1:] + [-1]], device=device)  # asks for every position's logits
        logits, _ = model(torch.tensor([ids], device=device), targets)
    finally:
        for layer, attend in zip(layers, usual):
            layer.attend = attend
    return logits[0].float(), weights


def token_losses(logits, ids):
    """The cross-entropy of each token after the first, given the tokens before it."""
    return F.cross_entropy(logits[:-1], torch.tensor(ids[1:], device=logits.device),
                           reduction="none")


@torch.inference_mode()
def logit_lens(model, ids, device):
    """[(top ids, their probabilities) at each position] after the embeddings and after each block:
    the token the residual stream would predict if it went straight to ln_f and the head
    ("interpreting GPT: the logit lens", nostalgebraist 2020); after the last block, the model's
    own prediction."""
    t = model.transformer
    idx = torch.tensor([ids], device=device)
    x = t.drop(t.wte(idx) + t.wpe(torch.arange(len(ids), device=device)))
    rows = []
    for block in (None, *t.h):
        x = x if block is None else block(x)
        # one layer at a time: all of GPT-2's at 1,024 tokens would be 13 x (1024, 50257) floats
        p, top = torch.softmax(model.lm_head(t.ln_f(x))[0].float(), dim=-1).max(dim=-1)
        rows.append((top.tolist(), p.tolist()))
    return rows


def candidates(logits, tokenizer, temperature, top_k, top_p):
    """The TOP_N likeliest next tokens of one position's logits (V,): p, the model's probability,
    and q, next_token_probs's, which sample_next_token draws from (0 where the settings cut;
    temperature 0 is greedy: all on the argmax)."""
    p = torch.softmax(logits.float(), dim=-1)
    if temperature == 0:
        q = F.one_hot(logits.argmax(), logits.numel()).float()
    else:
        q = next_token_probs(logits[None], temperature, top_k, top_p)[0]
    top = torch.topk(p, min(TOP_N, p.numel())).indices.tolist()
    return {"candidates": [{"id": i, "text": tokenizer.decode([i]), "p": p[i].item(),
                            "q": q[i].item()} for i in top], "survivors": int((q > 0).sum())}


@torch.inference_mode()
def leave_one_out(model, ids, pad_id, label, device, batch_size=32):
    """The classifier's probability of class `label` for the text without each of its tokens in
    turn (None for a one-token text: nothing would be left)."""
    texts = [ids[:i] + ids[i + 1 :] for i in range(len(ids))] if len(ids) > 1 else []
    out = []
    for start in range(0, len(texts), batch_size):
        x, lengths = pad_batch(texts[start : start + batch_size], pad_id)
        logits, _ = model(x.to(device), lengths.to(device))
        out += torch.softmax(logits.float(), dim=-1)[:, label].tolist()
    return out or [None]


def run_metrics(run_dir):
    """The curves in run_dir/metrics.jsonl, read as plot.py reads them, and whether a training run
    is writing there now (it holds a .lock)."""
    path = str(run_dir / "metrics.jsonl")
    try:
        rows = read_metrics(run_dir)
    except UserError as e:  # no metrics.jsonl (an imported model, say), or not text
        return {"path": path, "live": False, "rows": [], "note": str(e)}
    return {"path": path, "live": (run_dir / ".lock").exists(),
            "rows": [{k: r[k] for k in CURVES if is_number(r.get(k))} for r in rows]}


# --------------------------------------------------------------------------------------------------
# The API


@dataclass
class Checkpoint:
    path: str
    model: torch.nn.Module
    tokenizer: object
    info: object  # ring.checkpoint.CheckpointInfo
    device: str
    run_dir: Path  # where its metrics.jsonl is, or would be


def open_checkpoint(path, rt):
    """A checkpoint (or a run directory's best/, else last/) ready for inference, and its run."""
    model, tokenizer, info = load(path, rt)
    found = find_checkpoint(path)
    run_dir = Path(path) if found != Path(path) else found.parent
    return Checkpoint(str(path), model, tokenizer, info, rt.device, run_dir)


class BadRequest(Exception):
    """A request the API refuses: the status and this one-line message go back as JSON."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def get(fields, name, kinds, default=None):
    """fields[name], of one of the types kinds (True is no number), or default (None: required)."""
    value = default if fields.get(name) is None else fields[name]
    if value is None:
        raise BadRequest(f"'{name}' is missing")
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise BadRequest(f"'{name}' must be {' or '.join(k.__name__ for k in kinds)}, "
                         f"not {value!r:.40}")
    return value


def sampling(fields):
    """(temperature, top_k, top_p) of a request, checked by sample.py's rules."""
    temperature = float(get(fields, "temperature", (int, float), 1.0))
    top_k, top_p = get(fields, "top_k", (int,), 0), float(get(fields, "top_p", (int, float), 1.0))
    try:
        check_sampling(temperature, top_k, top_p)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    return temperature, top_k or None, top_p  # top_k 0: no limit, as in sample.py


class Explorer:
    """The API's routes: each takes a request's fields (a POST's JSON object, a GET's query) and
    returns what goes back as JSON. One request at a time: recording attention changes a model."""

    def __init__(self, checkpoints):
        self.checkpoints = checkpoints
        self.lock = threading.Lock()
        self.routes = {("GET", "/api/models"): self.models, ("GET", "/api/metrics"): self.metrics,
                       ("POST", "/api/analyze"): self.analyze, ("POST", "/api/next"): self.next,
                       ("POST", "/api/classify"): self.classify}

    def answer(self, method, path, fields):
        if (method, path) not in self.routes:
            raise BadRequest(f"no such address: {method} {path}", 404)
        with self.lock:
            return self.routes[method, path](fields)

    def checkpoint(self, fields, task=None):
        i = get(fields, "model", (int,), 0)  # an index into the command line's list, not a path
        if not 0 <= i < len(self.checkpoints):
            raise BadRequest(f"no model {i}: there are {len(self.checkpoints)}", 404)
        if task and self.checkpoints[i].info.task != task:
            kind = "a classifier" if task == "cls" else "a language model"
            raise BadRequest(f"model {i} is not {kind}")
        return self.checkpoints[i]

    def tokens(self, ck, ids):
        """[{id, text}] of a prompt's ids, which must fit the model's context."""
        if len(ids) > ck.model.config.block_size:
            raise BadRequest(f"the text is {len(ids):,} tokens; this model reads at most "
                             f"{ck.model.config.block_size:,} (its block_size)")
        return [{"id": i, "text": ck.tokenizer.decode([i])} for i in ids]

    def prompt(self, ck, fields):
        text = get(fields, "prompt", (str,))
        if not text and ck.tokenizer.eot_token is None:
            raise BadRequest("type a prompt: a character-level model has no start-of-text token")
        return prompt_ids(ck.tokenizer, text)  # characters not in the vocabulary: a UserError

    def models(self, fields):
        return [{"id": i, "path": ck.path, "task": ck.info.task, "labels": ck.info.labels,
                 "tokenizer": ck.info.tokenizer["type"], "iter_num": ck.info.iter_num,
                 "params": ck.model.num_params(), **vars(ck.model.config)}
                for i, ck in enumerate(self.checkpoints)]

    def metrics(self, fields):
        return run_metrics(self.checkpoint(fields).run_dir)

    def analyze(self, fields):
        ck = self.checkpoint(fields, "lm")
        ids = self.prompt(ck, fields)
        tokens, settings, cfg = self.tokens(ck, ids), sampling(fields), ck.model.config
        layer, head = get(fields, "layer", (int,), 0), get(fields, "head", (int,), -1)
        if not (0 <= layer < cfg.n_layer and -1 <= head < cfg.n_head):
            raise BadRequest(f"layer must be in [0, {cfg.n_layer}), head in [-1, {cfg.n_head})")
        logits, attention = forward_with_attention(ck.model, ids, ck.device)
        losses = token_losses(logits, ids)
        mean = losses.mean().item() if len(losses) else None
        lens = [{"ids": top, "texts": [ck.tokenizer.decode([i]) for i in top], "p": p}
                for top, p in logit_lens(ck.model, ids, ck.device)]
        weights = attention[layer].mean(0) if head == -1 else attention[layer][head]
        return {"tokens": tokens, "losses": [None] + losses.tolist(), "mean_loss": mean,
                "perplexity": None if mean is None else math.exp(mean), "lens": lens,
                "next": candidates(logits[-1], ck.tokenizer, *settings),
                "attention": {"layer": layer, "head": head, "weights": weights.tolist()}}

    def next(self, fields):
        """The candidates alone (the page's live controls); with "sample": true, also a token drawn
        by sample_next_token (seeded by "seed" if given)."""
        ck = self.checkpoint(fields, "lm")
        ids, settings = self.prompt(ck, fields), sampling(fields)
        self.tokens(ck, ids)  # that it fits
        with torch.inference_mode():
            logits = ck.model(torch.tensor([ids], device=ck.device))[0][0, -1].float()
        out = candidates(logits, ck.tokenizer, *settings)
        if get(fields, "sample", (bool,), False):
            seed = get(fields, "seed", (int,), random.randrange(2**63)) % 2**63
            generator = torch.Generator(device=ck.device).manual_seed(seed)
            drawn = sample_next_token(logits[None], *settings, generator=generator).item()
            out["drawn"] = {"id": drawn, "text": ck.tokenizer.decode([drawn])}
        return out

    def classify(self, fields):
        """metrics.classify_texts's probabilities (what sample.py --text prints) and, for each
        token, how much leaving it out lowers the predicted class's probability."""
        ck = self.checkpoint(fields, "cls")
        text = get(fields, "text", (str,))
        ids = ck.tokenizer.encode(classifier_text(text))
        if not ids:
            raise BadRequest("type a text to classify")
        tokens, truncation = self.tokens(ck, ids), (ck.info.run or {}).get("truncation", "head")
        [(label, probs)] = classify_texts(ck.model, ck.tokenizer, [text], ck.info.labels,
                                          ck.device, truncation=truncation)
        c = max(range(len(probs)), key=probs.__getitem__)
        pad = 0 if ck.tokenizer.eot_token is None else ck.tokenizer.eot_token
        without = leave_one_out(ck.model, ids, pad, c, ck.device)
        return {"labels": ck.info.labels, "probs": probs, "predicted": label, "tokens": tokens,
                "effects": [None if w is None else probs[c] - w for w in without]}


# --------------------------------------------------------------------------------------------------
# The HTTP server


class Handler(http.server.BaseHTTPRequestHandler):
    """GET / is the page, /api/... the API. Every other answer is JSON, errors included."""

    timeout = 30  # seconds a connection may stay silent before it is dropped

    def do_GET(self):
        self.reply(*self.route("GET", b""))

    def do_POST(self):
        n = self.headers.get("Content-Length", "0")
        n = int(n) if n.isdigit() else 0  # a garbled length reads as no body: "not JSON"
        body = self.rfile.read(n) if n <= MAX_BODY else None
        if body is None:
            self.rfile.read(min(n, 1 << 20))  # drained, so that the client reads the 413
        self.reply(*self.route("POST", body))

    def route(self, method, body):
        """(status, answer, content type) of a request; body None: too large."""
        try:
            if self.headers.get("Host", "").lower() not in self.server.allowed_hosts:
                raise BadRequest("refused: this server answers only to "
                                 f"{min(self.server.allowed_hosts)}", 403)  # DNS rebinding
            url = urlsplit(self.path)
            if method == "GET" and url.path in ("/", "/index.html"):
                return 200, PAGE.read_bytes(), "text/html"
            fields = dict(parse_qsl(url.query)) if method == "GET" else self.json_fields(body)
            if method == "GET" and fields.get("model", "").isdigit():
                fields["model"] = int(fields["model"])  # ?model=1
            return 200, self.server.explorer.answer(method, url.path, fields), "application/json"
        except BadRequest as e:
            return e.status, {"error": str(e)}, "application/json"
        except UserError as e:  # a project function's one-line refusal (unknown characters, ...)
            return 400, {"error": str(e)}, "application/json"
        except Exception as e:  # a bug, or out of memory: the traceback here, one line there
            traceback.print_exc(file=sys.stderr)
            return 500, {"error": f"internal error: {type(e).__name__}: {e}"}, "application/json"

    def json_fields(self, body):
        """A POST's JSON object. Requiring Content-Type: application/json matters: another site's
        page may only send that after asking (CORS), and this server never says yes."""
        if body is None:
            raise BadRequest(f"the request is larger than {MAX_BODY:,} bytes", 413)
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            raise BadRequest("send JSON, with Content-Type: application/json", 415)
        return parse_json(body, "the request body")  # a UserError: 400

    def reply(self, status, answer, kind):
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        self.send_response(status)
        for name, value in (("Content-Type", f"{kind}; charset=utf-8"), ("Cache-Control",
                            "no-store"), ("Content-Security-Policy", CSP)):
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except ConnectionError:  # the page went away (reloaded) before its answer
            pass

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals as JSON too; an unsupported method is 405, not 501."""
        self.reply(405 if code == 501 else code, {"error": message or "bad request"},
                   "application/json")

    def log_message(self, format, *args):  # quiet: the page polls, and errors go back as JSON
        pass


def make_server(checkpoints, host="127.0.0.1", port=0):
    """The page's server, bound (port 0: any free one), not yet serving: call serve_forever(). It
    answers only requests addressed to it by the names in allowed_hosts."""
    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.explorer = Explorer(checkpoints)
    port = server.server_address[1]
    names = ("localhost", "127.0.0.1", f"[{host}]" if ":" in host else host)
    server.allowed_hosts = {f"{name.lower()}:{port}" for name in names}
    return server


def main(argv=None):
    args = parse_config(ExploreSettings, argv, description=__doc__, prog="explore.py")
    rt = setup_runtime(args.device, args.dtype)
    server = make_server([open_checkpoint(path, rt) for path in args.checkpoints], args.host,
                         args.port)
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"explore.py: {len(args.checkpoints)} checkpoint(s) on {rt.device} ({rt.dtype}); open "
          f"http://{host}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()


@dataclass
class ExploreSettings:
    checkpoints: tuple = setting("run directories (best/ is used, else last/) or checkpoint "
                                 "directories: the page can open these and no others", (),
                                 "required")
    port: int = setting("the port to serve on (0: any free one)", 8000, "[0, 65535]")
    host: str = setting("the address to serve on (127.0.0.1: this machine only)", "127.0.0.1",
                        "required")
    device: str = setting("auto | cpu | cuda | cuda:N | mps", "auto")
    dtype: str = setting("precision of the weights", "auto",
                         ("auto", "float32", "bfloat16", "float16"))

    POSITIONAL = ("checkpoints",)

    def __post_init__(self):
        check_settings(self)


if __name__ == "__main__":
    run_main(main)
