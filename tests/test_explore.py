"""explore.py: the page's numbers against the spine's own functions, its refusals, and the page
itself in a real browser (headless Chromium through Playwright)."""

import csv
import json
import math
import os
import random
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import evaluate
import explore
import finetune
import sample
import train
from data import pad_batch
from metrics import classify_texts
from model import attention_weights
from plot import read_metrics
from ring.config import UserError
from ring.runtime import setup_runtime
from ring.tables import classifier_text

ROOT = Path(__file__).resolve().parents[1]
TEXT = " ".join(["the quick brown fox jumps over the lazy dog and then it sleeps"] * 300)
PROMPT = "the quick brown fox jumps"
SETTINGS = [(1.0, 0, 1.0), (0.5, 5, 1.0), (2.0, 0, 0.5), (0.8, 3, 0.9), (1.3, 0, 0.0),
            (0.1, 0, 1.0), (0.0, 0, 1.0)]
WORDS = {"colour": "red green blue yellow purple orange", "animal": "cat dog horse mouse tiger",
         "number": "one two three four five six"}


def tiny_lm(tmp, out, max_iters):
    """A character model trained for max_iters steps (0: as initialised) on a short text."""
    (tmp / "text.txt").write_text(TEXT)
    train.main(["--dataset", str(tmp / "text.txt"), "--out_dir", str(tmp / out), "--data_dir",
                str(tmp / "data"), "--n_layer=2", "--n_head=2", "--n_embd=16", "--block_size=32",
                "--batch_size=4", f"--max_iters={max_iters}", "--eval_interval=10",
                "--eval_iters=2", "--warmup_iters=2", "--learning_rate=1e-2", "--log_interval=5",
                "--device=cpu", "--dtype=float32"])
    return tmp / out


def tiny_classifier(tmp):
    """A GPT-2-tokenizer classifier trained from scratch on words that give their class away."""
    rng = random.Random(0)
    for name, n in (("train", 240), ("test", 30)):
        with open(tmp / f"{name}.csv", "w", newline="") as f:
            rows = [(label, " ".join(rng.choices(WORDS[label].split(), k=rng.randint(1, 6))))
                    for label in rng.choices(sorted(WORDS), k=n)]
            csv.writer(f).writerows([("text", "label")] + [(t, label) for label, t in rows])
    finetune.main(["--init_from=scratch", f"--dataset={tmp / 'train.csv'}",
                   f"--test_dataset={tmp / 'test.csv'}", f"--data_dir={tmp / 'data'}",
                   f"--out_dir={tmp / 'cls'}", "--n_layer=2", "--n_head=2", "--n_embd=16",
                   "--block_size=16", "--batch_size=16", "--learning_rate=3e-3",
                   "--warmup_iters=2", "--max_iters=30", "--eval_interval=10", "--log_interval=1",
                   "--device=cpu", "--dtype=float32"])
    return tmp / "cls"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explore")
    return {"lm": tiny_lm(tmp, "lm", 20), "start": tiny_lm(tmp, "start", 0) / "last",
            "cls": tiny_classifier(tmp)}


@pytest.fixture(scope="module")
def server(runs):
    """The page's server in a thread, on a free port, over [lm, start, cls]."""
    rt = setup_runtime("cpu", "float32")
    checkpoints = [explore.open_checkpoint(runs[name], rt) for name in ("lm", "start", "cls")]
    httpd = explore.make_server(checkpoints, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", checkpoints
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def call(base, path, body=None, headers=None, raw=None, method=None):
    """(status, JSON answer) of a GET (no body) or a POST of body as JSON (or of raw bytes)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def ids_of(checkpoint, text):
    return checkpoint.tokenizer.encode(text)


@torch.no_grad()
def last_logits(model, ids):
    return model(torch.tensor([ids]))[0][0, -1].float()


# --------------------------------------------------------------------------------------------------
# The numbers, against the spine


def test_next_token_probabilities_are_the_samplers(server):
    base, checkpoints = server
    model = checkpoints[0].model
    logits = last_logits(model, ids_of(checkpoints[0], PROMPT))
    p = torch.softmax(logits, -1)
    for temperature, top_k, top_p in SETTINGS:
        body = {"model": 0, "prompt": PROMPT, "temperature": temperature, "top_k": top_k,
                "top_p": top_p}
        if temperature == 0:  # greedy, as sample_next_token: everything on the argmax
            q = F.one_hot(logits.argmax(), logits.numel()).float()
        else:
            q = sample.next_token_probs(logits[None], temperature, top_k or None, top_p)[0]
        for path in ("/api/next", "/api/analyze"):
            status, answer = call(base, path, body)
            got = answer["next"] if path == "/api/analyze" else answer
            assert status == 200 and got["survivors"] == int((q > 0).sum())
            ranked = torch.topk(p, explore.TOP_N).indices.tolist()
            assert [c["id"] for c in got["candidates"]] == ranked
            for c in got["candidates"]:
                assert c["q"] == pytest.approx(q[c["id"]].item(), abs=1e-6)
                assert c["p"] == pytest.approx(p[c["id"]].item(), abs=1e-6)
                assert c["text"] == checkpoints[0].tokenizer.decode([c["id"]])
    # what /api/next draws is sample_next_token's draw, with the same seed
    body = {"model": 0, "prompt": PROMPT, "temperature": 1.5, "top_k": 0, "top_p": 0.9,
            "sample": True, "seed": 7}
    drawn = sample.sample_next_token(logits[None], 1.5, None, 0.9,
                                     torch.Generator().manual_seed(7)).item()
    assert call(base, "/api/next", body)[1]["drawn"]["id"] == drawn


def layer_queries_and_keys(model, ids):
    """Each layer's q and k (B, nh, T, hs), computed here from the blocks' own weights."""
    t, C, nh = model.transformer, model.config.n_embd, model.config.n_head
    idx = torch.tensor([ids])
    x = t.wte(idx) + t.wpe(torch.arange(len(ids)))
    out = []
    for block in t.h:
        q, k, _ = block.attn.c_attn(block.ln_1(x)).split(C, dim=2)
        out.append([z.view(1, len(ids), nh, C // nh).transpose(1, 2) for z in (q, k)])
        x = block(x)
    return out


@torch.no_grad()
def test_attention_is_causal_sums_to_one_and_is_the_layers_own(server):
    base, checkpoints = server
    model, ids = checkpoints[0].model, ids_of(checkpoints[0], PROMPT)
    T = len(ids)
    for layer, (q, k) in enumerate(layer_queries_and_keys(model, ids)):
        expected = attention_weights(q, k)[0]  # (nh, T, T)
        for head in range(-1, model.config.n_head):
            body = {"model": 0, "prompt": PROMPT, "layer": layer, "head": head}
            status, answer = call(base, "/api/analyze", body)
            w = torch.tensor(answer["attention"]["weights"])
            assert status == 200 and w.shape == (T, T)
            assert torch.allclose(w.sum(-1), torch.ones(T), atol=1e-5)
            assert (w.triu(diagonal=1) == 0).all()  # no query sees a later key
            want = expected.mean(0) if head == -1 else expected[head]
            assert torch.allclose(w, want, atol=1e-6)
    # the recording was for that pass only: the layers use their usual attention again
    assert {m.attend.__name__ for m in model.modules() if hasattr(m, "attend")} == {
        "fused_attention"}


def test_bfloat16_fast_paths_are_put_back_and_the_numbers_stay_float32(runs):
    # On a CPU in bf16, sample.load swaps in the ring's own attention and packed layers
    # (ring/fastpaths.py): the recording pass must work with them and put them back.
    ck = explore.open_checkpoint(runs["lm"], setup_runtime("cpu", "bfloat16"))
    answer = explore.Explorer([ck]).answer("POST", "/api/analyze", {"prompt": PROMPT, "head": 1})
    w = torch.tensor(answer["attention"]["weights"])
    assert torch.allclose(w.sum(-1), torch.ones(len(w)), atol=1e-5) and (w.triu(1) == 0).all()
    assert {m.attend.__name__ for m in ck.model.modules() if hasattr(m, "attend")} == {
        "cpu_bf16_attention"}
    assert len(answer["lens"]) == 3 and answer["mean_loss"] > 0


@torch.no_grad()
def test_the_logit_lens_ends_with_the_models_own_prediction(server):
    base, checkpoints = server
    model, ids = checkpoints[0].model, ids_of(checkpoints[0], PROMPT)
    lens = call(base, "/api/analyze", {"model": 0, "prompt": PROMPT})[1]["lens"]
    assert len(lens) == model.config.n_layer + 1  # the embeddings, then each block
    x = torch.tensor([ids])
    logits, _ = model(x, x)  # with targets: the logits of every position
    probs = torch.softmax(logits[0].float(), -1)
    assert lens[-1]["ids"] == probs.argmax(-1).tolist()
    assert lens[-1]["p"] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-6)
    assert lens[-1]["texts"] == [checkpoints[0].tokenizer.decode([i]) for i in lens[-1]["ids"]]
    t = model.transformer  # the first row: the embeddings alone through ln_f and the head
    embedded = t.wte(x) + t.wpe(torch.arange(len(ids)))
    assert lens[0]["ids"] == model.lm_head(t.ln_f(embedded))[0].argmax(-1).tolist()


def test_per_token_losses_average_to_evaluates_loss(server):
    base, checkpoints = server
    model = checkpoints[0].model
    for prompt in (PROMPT, TEXT[:32], "th"):  # 32 characters: the whole block_size
        ids = ids_of(checkpoints[0], prompt)
        answer = call(base, "/api/analyze", {"model": 0, "prompt": prompt})[1]
        losses = answer["losses"]
        assert losses[0] is None and len(losses) == len(ids)
        expected, n = evaluate.language_model_loss(model, ids, 4, "cpu")
        assert n == len(ids) - 1
        assert sum(losses[1:]) / n == pytest.approx(expected, abs=1e-5)
        assert answer["mean_loss"] == pytest.approx(expected, abs=1e-5)
        assert answer["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
        assert [t["id"] for t in answer["tokens"]] == ids


def test_classifier_probabilities_are_sample_pys_and_each_tokens_part(server, runs, capsys):
    base, checkpoints = server
    ck = checkpoints[2]
    text = "tiger one red"
    status, answer = call(base, "/api/classify", {"model": 2, "text": text})
    assert status == 200
    [(label, probs)] = classify_texts(ck.model, ck.tokenizer, [text], ck.info.labels, "cpu")
    assert answer["predicted"] == label and answer["labels"] == ck.info.labels
    assert answer["probs"] == pytest.approx(probs, abs=1e-6)
    sample.main(["--out_dir", str(runs["cls"]), "--text", text, "--device", "cpu",
                 "--dtype", "float32"])
    printed = capsys.readouterr().out.splitlines()[-1]  # "label  [name p  name p ...]  text"
    assert printed.split()[0] == answer["predicted"]
    for name, p in zip(answer["labels"], answer["probs"]):
        assert f"{name} {p:.3f}" in printed
    # each token's effect: the predicted class's probability, less its probability without it
    ids = ck.tokenizer.encode(classifier_text(text))
    c = answer["labels"].index(label)
    assert [t["id"] for t in answer["tokens"]] == ids
    for i, effect in enumerate(answer["effects"]):
        x, lengths = pad_batch([ids[:i] + ids[i + 1 :]], ck.tokenizer.eot_token)
        with torch.no_grad():
            without = torch.softmax(ck.model(x, lengths)[0].float(), -1)[0, c].item()
        assert effect == pytest.approx(probs[c] - without, abs=1e-6)


def test_metrics_are_read_as_plot_reads_them_and_a_running_run_is_polled(server, runs, tmp_path):
    base, _ = server
    for i, run in ((0, runs["lm"]), (1, runs["start"].parent), (2, runs["cls"])):
        status, answer = call(base, f"/api/metrics?model={i}")  # the run holding the checkpoint
        assert status == 200 and answer["path"] == str(run / "metrics.jsonl")
        assert [r["iter"] for r in answer["rows"]] == [r["iter"] for r in read_metrics(run)]
        assert not answer["live"]
    accuracy = call(base, "/api/metrics?model=2")[1]["rows"]
    assert any("val_accuracy" in r for r in accuracy) and any("lr" in r for r in accuracy)
    (tmp_path / "metrics.jsonl").write_text('{"iter": 0, "loss": 2.5, "lr": 0.1}\n[1]\n'
                                           '{"iter": 5, "loss": 2.0, "note": "x"}\n{"iter": 1')
    (tmp_path / ".lock").write_text("pid 1")  # a run is writing here
    answer = explore.run_metrics(tmp_path)
    assert answer["live"] and answer["rows"] == [{"iter": 0, "loss": 2.5, "lr": 0.1},
                                                 {"iter": 5, "loss": 2.0}]
    assert explore.run_metrics(tmp_path / "nothing")["rows"] == []


# --------------------------------------------------------------------------------------------------
# Refusals: one JSON error each, and the server goes on


def test_bad_requests_get_one_json_error_and_the_server_keeps_serving(server):
    base, _ = server
    good = {"model": 0, "prompt": PROMPT}
    bad = [  # (path, body, headers, raw, status)
        ("/api/analyze", {**good, "prompt": "the " * 9}, None, None, 400),  # 36 > block_size 32
        ("/api/analyze", {**good, "top_p": 2}, None, None, 400),
        ("/api/next", {**good, "temperature": -1}, None, None, 400),
        ("/api/analyze", {**good, "temperature": "hot"}, None, None, 400),
        ("/api/analyze", {**good, "top_k": 2.5}, None, None, 400),
        ("/api/analyze", {**good, "prompt": 3}, None, None, 400),
        ("/api/analyze", {**good, "layer": 2}, None, None, 400),
        ("/api/analyze", {**good, "prompt": "THE"}, None, None, 400),  # not in the vocabulary
        ("/api/analyze", {"model": 0, "prompt": ""}, None, None, 400),  # char model: no start
        ("/api/analyze", None, None, b"{not json", 400),
        ("/api/analyze", None, None, b"\xff\xfe", 400),
        ("/api/analyze", None, None, b"[1, 2]", 400),
        ("/api/analyze", None, None, b"x" * (explore.MAX_BODY + 1), 413),
        ("/api/analyze", good, {"Content-Type": "text/plain"}, None, 415),
        ("/api/analyze", good, {"Host": "attacker.example:80"}, None, 403),
        ("/", None, {"Host": "rebound.example"}, None, 403),
        ("/api/models", None, {"Host": "127.0.0.1:1"}, None, 403),
        ("/api/analyze", {**good, "model": 3}, None, None, 404),
        ("/api/analyze", {**good, "model": "../../etc"}, None, None, 400),
        ("/api/metrics?model=9", None, None, None, 404),
        ("/api/analyze", {**good, "model": 2}, None, None, 400),  # a classifier
        ("/api/classify", {"model": 0, "text": "the"}, None, None, 400),  # a language model
        ("/api/classify", {"model": 2, "text": " ".join(["cat"] * 17)}, None, None, 400),
        ("/api/nothing", None, None, None, 404),
        ("/api/analyze", None, None, None, 404),  # a GET of a POST address
    ]
    for path, body, headers, raw, status in bad:
        got, answer = call(base, path, body, headers, raw)
        assert (got, list(answer)) == (status, ["error"]), (path, body, headers, got, answer)
        assert isinstance(answer["error"], str) and "Traceback" not in answer["error"]
        assert call(base, "/api/analyze", good)[0] == 200  # and the next good request works
    assert call(base, "/api/models", method="PUT") == (405, {"error": "Unsupported method ('PUT')"})
    ok, models = call(base, "/api/models", headers={"Host": "localhost:" + base.rsplit(":")[-1]})
    assert ok == 200 and [m["task"] for m in models] == ["lm", "lm", "cls"]


def test_command_line_mistakes_are_one_line(runs):
    with pytest.raises(UserError, match="checkpoints is missing"):
        explore.main([])
    with pytest.raises(UserError, match="port must be in"):
        explore.main([str(runs["lm"]), "--port=70000"])
    done = subprocess.run([sys.executable, "explore.py", str(runs["lm"] / "nothing"),
                           "--device=cpu"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: no checkpoint in")


# --------------------------------------------------------------------------------------------------
# The page in a real browser

CHROMIUM = "/usr/bin/chromium"  # Debian's; $MINIGPT2_CHROMIUM names another
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


def chromium():
    """The Chromium to drive and Playwright's sync_playwright. Without them the browser tests are
    skipped with what to install, unless CI is set: there they must run."""
    found = [p for p in (os.environ.get("MINIGPT2_CHROMIUM"), CHROMIUM) if p and Path(p).is_file()]
    missing = [] if found else ["Chromium (apt-get install chromium, or set MINIGPT2_CHROMIUM "
                                "to a Chromium binary)"]
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("Playwright for Python (pip install playwright)")
    if missing:
        message = "the browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found[0], sync_playwright


def set_range(page, selector, value):
    """Move a slider as a user would: set its value and send the input event."""
    page.eval_on_selector(selector, "(e, v) => { e.value = v; e.dispatchEvent(new Event('input', "
                          "{bubbles: true})); }", value)


def wait_for(page, view, **data):
    """Until the view shows what data says (its data- attributes, as strings)."""
    page.wait_for_function("([view, data]) => { const d = document.getElementById(view).dataset;"
                           " return Object.entries(data).every(([k, v]) => d[k] === v); }",
                           arg=[view, data], timeout=30_000)


def bars(page, container="#next"):
    """The candidates a view shows: their data- attributes, and the lengths of their bars, which
    must be p and q on one scale (the largest of them is a full bar)."""
    rows = page.eval_on_selector_all(f"{container} .cand", "rows => rows.map(r => ({...r.dataset,"
                                     " pBar: r.querySelector('.p').style.width,"
                                     " qBar: r.querySelector('.q').style.width}))")
    rows = [{"id": int(r["id"]), "p": float(r["p"]), "q": float(r["q"]), "kept": r["kept"] == "1",
             "text": r["text"], "bars": (float(r["pBar"][:-1]), float(r["qBar"][:-1]))}
            for r in rows]
    scale = max(max(r["p"], r["q"]) for r in rows)
    for r in rows:
        assert r["bars"] == pytest.approx((100 * r["p"] / scale, 100 * r["q"] / scale), abs=1e-3)
    return rows


def test_the_page_in_a_browser(server, tmp_path):
    executable, sync_playwright = chromium()
    base, checkpoints = server
    # computed here, before the page's requests: the server may be using the model meanwhile
    logits = last_logits(checkpoints[0].model, ids_of(checkpoints[0], PROMPT))
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))  # an exception in the script
            page.goto(base + "/")
            check_language_model_views(page, base, checkpoints, logits)
            page.screenshot(path=str(tmp_path / "explore-lm.png"), full_page=True)
            check_classifier_view(page, base)
            page.screenshot(path=str(tmp_path / "explore-cls.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert (tmp_path / "explore-lm.png").stat().st_size > 10_000
    print(f"screenshots: {tmp_path}/explore-lm.png, explore-cls.png")


def check_language_model_views(page, base, checkpoints, logits):
    ck = checkpoints[0]
    page.fill("#prompt", PROMPT)
    wait_for(page, "next-view", prompt=PROMPT, temperature="1", topP="1")
    wait_for(page, "compare-view", prompt=PROMPT)
    # 2. the bars are the API's numbers, and the controls change who survives as the sampler says
    seen = []
    for temperature, top_k, top_p in ((1.0, 0, 1.0), (1.0, 0, 0.5), (2.0, 0, 0.5), (0.1, 0, 0.5),
                                      (0.1, 3, 1.0)):
        set_range(page, "#temperature", str(temperature))
        set_range(page, "#top_p", str(top_p))
        page.fill("#top_k", str(top_k))
        wait_for(page, "next-view", temperature=f"{temperature:g}", topK=str(top_k),
                 topP=f"{top_p:g}")
        shown = bars(page)
        api = call(base, "/api/next", {"model": 0, "prompt": PROMPT, "temperature": temperature,
                                       "top_k": top_k, "top_p": top_p})[1]["candidates"]
        for key in ("id", "p", "q"):  # the page shows the very numbers (JSON keeps every bit)
            assert [b[key] for b in shown] == [c[key] for c in api]
        q = sample.next_token_probs(logits[None], temperature, top_k or None, top_p)[0]
        assert [b["kept"] for b in shown] == [bool(q[b["id"]] > 0) for b in shown]
        seen.append(sum(b["kept"] for b in shown))
    assert seen[0] == explore.TOP_N and seen[1] < seen[0] and seen[2] > seen[1] and seen[4] == 3
    # 5. two checkpoints side by side, each with its own numbers
    for side, model in ((0, 0), (1, 1)):
        api = call(base, "/api/analyze", {"model": model, "prompt": PROMPT, "temperature": 0.1,
                                          "top_k": 3, "top_p": 1.0})[1]["next"]["candidates"]
        wait_for(page, "compare-view", prompt=PROMPT, temperature="0.1", topK="3")
        shown = bars(page, f"#compare-{side}")
        assert [(b["id"], b["q"]) for b in shown] == [(c["id"], c["q"]) for c in api]
    set_range(page, "#temperature", "1")
    page.fill("#top_k", "0")
    set_range(page, "#top_p", "1")
    wait_for(page, "next-view", temperature="1", topK="0", topP="1")
    # clicking a candidate appends it; the tokens view follows
    first = bars(page)[0]
    page.click("#next .cand >> nth=0")
    longer = PROMPT + first["text"]
    assert page.input_value("#prompt") == longer
    wait_for(page, "tokens-view", prompt=longer)
    assert page.locator("#tokens .tok").count() == len(ids_of(ck, longer))
    page.click("#sample")  # one sampled token more
    page.wait_for_function("n => document.getElementById('prompt').value.length === n",
                           arg=len(longer) + 1)
    sampled = page.input_value("#prompt")
    wait_for(page, "attention-view", prompt=sampled)
    check_attention_and_lens(page, base, ck, sampled)


def check_attention_and_lens(page, base, ck, prompt):
    T = len(ids_of(ck, prompt))
    # 1. tokens coloured by their loss: the values are the API's
    answer = call(base, "/api/analyze", {"model": 0, "prompt": prompt})[1]
    losses = page.eval_on_selector_all("#tokens .tok", "ts => ts.map(t => t.dataset.value)")
    assert losses[0] is None and [float(v) for v in losses[1:]] == answer["losses"][1:]
    assert float(page.inner_text("#mean-loss")) == pytest.approx(answer["mean_loss"], abs=1e-4)
    # 3. the heat map: one cell per (query, key <= query), grey above the diagonal
    canvas = page.eval_on_selector("#attention-map", "c => ({...c.dataset})")
    assert (int(canvas["size"]), int(canvas["cells"])) == (T, T * (T + 1) // 2)
    cell, margin = int(canvas["cell"]), int(canvas["margin"])
    pixel = ("([x, y]) => Array.from(document.getElementById('attention-map').getContext('2d')"
             ".getImageData(x, y, 1, 1).data.slice(0, 3))")
    centre = lambda i, j: [margin + j * cell + cell // 3, margin + i * cell + cell // 3]
    assert page.evaluate(pixel, centre(0, 1)) == [224, 224, 224]  # masked: a later key
    assert page.evaluate(pixel, centre(0, 0))[2] == 255  # query 0 puts all on itself: deep blue
    assert page.evaluate(pixel, centre(0, 0))[0] < 10
    # ... each cell's colour is its weight (not transposed): layer 1, head 0
    page.select_option("#layer", "1")
    page.select_option("#head", "0")
    wait_for(page, "attention-view", prompt=prompt, layer="1", head="0")
    weights = call(base, "/api/analyze", {"model": 0, "prompt": prompt, "layer": 1,
                                          "head": 0})[1]["attention"]["weights"]
    for i, j in ((T - 1, 0), (T - 1, T - 1), (T // 2, 1), (T - 2, T // 2)):
        shade = round(255 * (1 - math.sqrt(weights[i][j])))
        assert page.evaluate(pixel, centre(i, j)) == [shade, shade, 255], (i, j)
    # 4. the logit lens: a row per layer and the embeddings; the last is the model's prediction
    wait_for(page, "lens-view", prompt=prompt)
    n = ck.model.config.n_layer
    assert page.locator("#lens tr[data-layer]").count() == n + 1
    last = page.eval_on_selector_all(f"#lens tr[data-layer='{n}'] td",
                                     "cells => cells.map(c => c.dataset.id)")
    assert [int(i) for i in last] == answer["lens"][-1]["ids"]
    # 7. the run's curves
    page.wait_for_selector("#charts svg polyline[data-series='lr']")
    assert page.locator("#charts svg").count() == 2  # loss and learning rate: no accuracy here


def check_classifier_view(page, base):
    page.select_option("#model", "2")
    page.fill("#prompt", "tiger one red")
    wait_for(page, "classify-view", text="tiger one red")
    answer = call(base, "/api/classify", {"model": 2, "text": "tiger one red"})[1]
    shown = page.eval_on_selector_all("#classes .cand", "rs => rs.map(r => ({...r.dataset}))")
    assert [(r["label"], float(r["p"])) for r in shown] == list(zip(answer["labels"],
                                                                      answer["probs"]))
    effects = page.eval_on_selector_all("#effects .tok", "ts => ts.map(t => t.dataset.value)")
    assert [float(e) for e in effects] == answer["effects"]
    assert page.locator("#next-view").is_hidden() and page.locator("#sample").is_hidden()
    page.wait_for_selector("#charts svg[data-title='accuracy']")
