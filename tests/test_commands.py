"""The commands (sample.py, evaluate.py, hf_import.py, plot.py, bench.py) keep train.py's
promises: one way to take settings (every mistake one line, an unknown key with the closest one
named), outputs that never replace what the command did not write, plots from any input,
spreadsheet-safe CSVs, losses in float32, and one preparation of a text for a classifier, whatever
path it takes."""

import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import bench
import evaluate
import finetune
import hf_import
import plot
import sample
import train
from data import GPT2Tokenizer, pad_batch
from metrics import evaluate_classifier
from model import GPT, GPTClassifier
from train import load_model
from ring.checkpoint import save_checkpoint
from ring.config import UserError, parse_config
from ring.files import check_output_dir, check_output_file, read_text, write_file
from ring.runtime import setup_runtime
from data import read_labelled
from ring.tables import spreadsheet_safe
from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {  # the settings class of each command, and how its --help is asked for
    "sample.py": (sample.SampleSettings, sample.main, []),
    "evaluate.py": (evaluate.EvaluateSettings, evaluate.main, []),
    "hf_import.py": (hf_import.ImportSettings, hf_import.main, []),
    "plot.py": (plot.PlotSettings, plot.main, []),
    "train.py": (train.TrainConfig, train.main, []),
    "finetune.py": (finetune.FinetuneConfig, finetune.main, []),
    **{f"bench.py {name}": (settings, bench.main, [name])
       for name, (settings, _) in bench.COMMANDS.items()},
}


def script(*args):
    """Run a script of the project; returns the CompletedProcess."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


# --------------------------------------------------------------------------------------------------
# One way to take settings


def test_a_mistyped_key_is_one_line_naming_the_closest():
    result = script("sample.py", "--tempreature=0.5")
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: unknown option --tempreature (did you mean "
                                     "'temperature'?)")
    for name, (settings, main, first) in SETTINGS.items():
        key = next(f for f in settings.__dataclass_fields__ if len(f) > 4)
        with pytest.raises(UserError, match=rf"unknown option --{key}x \(did you mean '{key}'"):
            main([*first, f"--{key}x=1"])


def test_a_parse_error_is_one_line_without_the_usage(capsys):
    for argv in (["--out_dir"], ["--num_samples=two"], ["--compare"]):
        with pytest.raises(SystemExit) as e:
            sample.main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
        assert "usage" not in err
    with pytest.raises(UserError, match="unexpected argument 'stray'"):
        sample.main(["stray"])


@pytest.mark.parametrize("name", list(SETTINGS))
def test_help_lists_every_key_with_its_help_default_and_rule(name, capsys):
    settings, main, first = SETTINGS[name]
    with pytest.raises(SystemExit) as e:
        main([*first, "--help"])
    assert e.value.code == 0
    text = "".join(capsys.readouterr().out.split())  # argparse wraps the lines, even at hyphens
    positional = getattr(settings, "POSITIONAL", None) or ()
    for field in settings.__dataclass_fields__.values():
        assert (field.name.upper() if field.name in positional else f"--{field.name}") in text
        shown = "(required)" if field.metadata["rule"] == "required" else "(default:"
        after = "" if field.metadata["rule"] else shown
        assert "".join(field.metadata["help"].split()) + after in text
    assert "in[0,1](default:1.0)" in text or name != "sample.py"  # a rule and a default


def test_bare_flags_mean_true_and_still_take_a_value():
    cfg = parse_config(sample.SampleSettings, ["--compile", "--no_kv_cache", "--out_dir", "x"])
    assert cfg.compile is True and cfg.no_kv_cache is True and cfg.out_dir == "x"
    cfg = parse_config(sample.SampleSettings, ["--compile", "false", "--no_kv_cache=0"])
    assert cfg.compile is False and cfg.no_kv_cache is False
    cfg = parse_config(hf_import.ImportSettings, ["--force", "gpt2", "--keep_download"])
    assert cfg.force is True and cfg.source == "gpt2" and cfg.keep_download is True
    cfg = parse_config(train.TrainConfig, ["--compile"])
    assert cfg.compile is True


def test_settings_that_take_several_values():
    cfg = parse_config(sample.SampleSettings,
                       ["--text", "A", "--text", "B c", "--compare", "BASE", "TUNED"])
    assert cfg.text == ("A", "B c") and cfg.compare == ("BASE", "TUNED")
    with pytest.raises(UserError, match="--compare takes two checkpoints, BASE TUNED, not 3"):
        parse_config(sample.SampleSettings, ["--compare", "a", "b", "c"])
    argv = ["--threads", "1", "--rounds", "3", "--variants", "fp32", "bf16", "int8"]
    cfg = parse_config(bench.SampleBench, argv)
    assert cfg.variants == ("fp32", "bf16", "int8") and cfg.threads == 1 and cfg.rounds == 3
    with pytest.raises(UserError, match="variants must be one of fp32, fp32-compiled, bf16, int8"):
        parse_config(bench.SampleBench, ["--variants", "fp32", "bf17"])


def test_positional_settings_and_the_commands_users_type():
    parse = lambda settings, line: parse_config(settings, shlex.split(line))
    cfg = parse(sample.SampleSettings, '--out_dir out/shakespeare --start "ROMEO:" --num_samples 3'
                ' --max_new_tokens 500 --temperature 0.8 --top_k 200 --top_p 0.95 --seed 1337')
    assert (cfg.start, cfg.num_samples, cfg.top_p, cfg.seed) == ("ROMEO:", 3, 0.95, 1337)
    cfg = parse(sample.SampleSettings, '--compare A B --start "x" --temperature 0')
    assert cfg.compare == ("A", "B") and cfg.temperature == 0.0
    cfg = parse(evaluate.EvaluateSettings, "out/cls --data test.csv --max_samples 500")
    assert (cfg.checkpoint, cfg.data, cfg.max_samples) == ("out/cls", "test.csv", 500)
    cfg = parse(evaluate.EvaluateSettings, "RUN --predict texts.jsonl --out predictions.csv")
    assert (cfg.checkpoint, cfg.predict, cfg.out) == ("RUN", "texts.jsonl", "predictions.csv")
    assert parse(hf_import.ImportSettings, "gpt2").source == "gpt2"
    cfg = parse(hf_import.ImportSettings, "--export out/run --out_dir hf_model --force")
    assert (cfg.export, cfg.out_dir, cfg.force) == ("out/run", "hf_model", True)
    cfg = parse(plot.PlotSettings, "out/a --out_dir plots out/b")  # positionals around options
    assert cfg.runs == ("out/a", "out/b") and cfg.out_dir == "plots"
    cfg = parse(bench.TrainBench, "configs/shakespeare.py --max_iters=300 --threads 1")
    assert cfg.max_iters == 300 and cfg.threads == 1 and cfg.n_layer == 4  # the config file's
    cfg = parse(bench.RaceBench, '"cmd A" "cmd B" --rounds 3')
    assert cfg.commands == ("cmd A", "cmd B") and cfg.rounds == 3
    cfg = parse(bench.QualityBench, "RUN --data FILE")
    assert (cfg.checkpoint, cfg.data) == ("RUN", "FILE")


def test_one_of_two_is_one_line():
    for argv in (["RUN"], ["RUN", "--data", "a", "--predict", "b"]):
        with pytest.raises(UserError, match=r"give one of --data FILE \(score the checkpoint\)"):
            parse_config(evaluate.EvaluateSettings, argv)
    for argv in ([], ["gpt2", "--export", "out/run"]):
        with pytest.raises(UserError, match="give either a SOURCE to import or --export CKPT_DIR"):
            parse_config(hf_import.ImportSettings, argv)
    with pytest.raises(UserError, match="checkpoint is missing: a run directory"):
        parse_config(evaluate.EvaluateSettings, ["--data", "a"])


def test_the_sampling_rules_are_one_check():
    for name, (_, rule) in sample.SAMPLING_RULES.items():
        assert sample.SampleSettings.__dataclass_fields__[name].metadata["rule"] == rule
    assert parse_config(sample.SampleSettings, ["--top_p", "0"]).top_p == 0.0  # greedy, as the API
    for bad, message in (("--top_p=1.5", r"top_p must be in \[0, 1\], not 1.5"),
                         ("--temperature=inf", "temperature must be a finite number, not inf"),
                         ("--top_k=-1", "top_k must be >= 0, not -1")):
        with pytest.raises(UserError, match=message):
            parse_config(sample.SampleSettings, [bad])
        key, value = bad[2:].split("=")
        given = {"temperature": 1.0, "top_k": None, "top_p": None, key: float(value)}
        if key == "top_k":
            given[key] = int(value)
        with pytest.raises(ValueError, match=message):  # the Python API: the same rule
            sample.check_sampling(**given)
    assert sample.sample_next_token(torch.tensor([[0.1, 3.0, 0.2]]), 1.0, top_p=0.0).item() == 1


def test_every_text_file_is_read_by_one_reader_that_names_it(tmp_path):
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    with pytest.raises(UserError, match=r"^--file .*latin1.txt is not UTF-8 text \(byte 3\); conv"):
        read_text(tmp_path / "latin1.txt", "--file")
    with pytest.raises(UserError, match=r"^prompt file .*nowhere.txt not found$"):
        read_text(tmp_path / "nowhere.txt", "prompt file")
    with pytest.raises(UserError, match=r"^cannot read --data .* \(Is a directory\)$"):
        read_text(tmp_path, "--data")
    assert not hasattr(sample, "read_text_file")


# --------------------------------------------------------------------------------------------------
# Classifier checkpoints for the commands: random, with a head large enough that texts differ


def classifier(path, labels=("negative", "positive"), seed=0):
    torch.manual_seed(seed)
    config = tiny_config(vocab_size=50257, block_size=64, n_embd=32, n_classes=len(labels))
    model = GPTClassifier(config)
    with torch.no_grad():
        model.score.weight.normal_(0, 3.0)
    info = {"task": "cls", "labels": list(labels), "tokenizer": {"type": "gpt2"}}
    save_checkpoint(path, model, info)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def predict(ckpt, texts_file, out, *more):
    evaluate.main([str(ckpt), "--predict", str(texts_file), "--out", str(out), "--device=cpu",
                   "--dtype=float32", *more])
    return list(csv.DictReader(open(out, newline="", encoding="utf-8")))


# --------------------------------------------------------------------------------------------------
# Nothing replaced that the command did not write


def test_evaluate_out_never_replaces_what_it_did_not_write(tmp_path):
    ckpt = classifier(tmp_path / "cls")
    texts = write_jsonl(tmp_path / "texts.jsonl", [{"text": "a good film"}])
    (tmp_path / "mine.csv").write_text("my own notes\n")
    config_before = (ckpt / "config.json").read_bytes()
    refusals = {  # --out -> what the one line says
        tmp_path / "mine.csv": "already exists and was not written by this command",
        texts: "is this command's input",
        ckpt / "config.json": "lies inside the checkpoint",
        ckpt / "predictions.csv": "lies inside the checkpoint",
        tmp_path: "is a directory",
    }
    for out, message in refusals.items():
        for force in ([], ["--force"]):
            with pytest.raises(UserError, match=message):
                predict(ckpt, texts, out, *force)
    assert (tmp_path / "mine.csv").read_text() == "my own notes\n"
    assert (ckpt / "config.json").read_bytes() == config_before and load_model(ckpt)  # still loads
    assert json.loads(texts.read_text()) == {"text": "a good film"}

    first = predict(ckpt, texts, tmp_path / "p.csv")  # an earlier output of evaluate.py...
    with pytest.raises(UserError, match=r"p.csv already exists; choose another --out, or pass"):
        predict(ckpt, texts, tmp_path / "p.csv")
    assert predict(ckpt, texts, tmp_path / "p.csv", "--force") == first  # ...with --force only

    labelled = write_jsonl(tmp_path / "labelled.jsonl", [{"text": "good", "label": "positive"},
                                                         {"text": "bad", "label": "negative"}])
    score = ["--data", str(labelled), "--out", str(tmp_path / "m.json"),
             "--data_dir", str(tmp_path / "d"), "--device=cpu"]
    evaluate.main([str(ckpt), *score])
    with pytest.raises(UserError, match="m.json already exists; choose another --out, or pass"):
        evaluate.main([str(ckpt), *score])
    evaluate.main([str(ckpt), *score, "--force"])
    with pytest.raises(UserError, match="p.csv already exists and was not written by this command"):
        evaluate.main([str(ckpt), *score[:2], "--out", str(tmp_path / "p.csv"), "--force"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no tmp files


def test_the_output_rules_hold_for_files_and_directories(tmp_path):
    train.main(["--dataset=shakespeare", f"--out_dir={tmp_path / 'run'}",
                f"--data_dir={tmp_path / 'data'}", "--max_iters=0", "--n_layer=1", "--n_head=1",
                "--n_embd=8", "--block_size=8", "--batch_size=2", "--eval_iters=1", "--device=cpu",
                "--dtype=float32"])
    run, never = tmp_path / "run", lambda path: pytest.fail(f"asked whether {path} is ours")
    for path in (run / "metrics.jsonl", run / "last", run / "best" / "x.json"):
        with pytest.raises(UserError, match="belongs to the run|lies inside the checkpoint"):
            check_output_file(path, never, force=True)
    for path in (run, run / "last", run / "best" / "plots", tmp_path):
        with pytest.raises(UserError, match="holds a training run|belongs to the run|lies inside"):
            check_output_dir(path, never, force=True)
    write_file(tmp_path / "out.txt", lambda f: f.write("ours"))
    assert (tmp_path / "out.txt").read_text() == "ours"

    def failing(f):
        f.write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(UserError, match=r"cannot write .*out.txt: No space left on device"):
        write_file(tmp_path / "out.txt", failing)
    assert (tmp_path / "out.txt").read_text() == "ours"  # as it was
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def write_metrics(run, rows):
    run.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (run / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    return run


CLASSIFIER_ROWS = [
    {"iter": 0, "loss": 1.1, "lr": 1e-3},
    {"iter": 5, "train_loss": 0.9, "val_loss": 1.0, "val_accuracy": 0.5, "val_macro_f1": 0.4,
     "val_per_class": {"a": {}, "b": {}}, "val_confusion": [[3, 1], [2, 4]]},
]


def test_plot_writes_a_new_directory_and_replaces_only_its_own_with_force(tmp_path):
    pytest.importorskip("matplotlib")
    run = write_metrics(tmp_path / "run", CLASSIFIER_ROWS)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "loss.png").write_bytes(b"my own picture")
    for out in (tmp_path / "mine", run, tmp_path):  # the user's own loss.png, a run, its parent
        with pytest.raises(UserError, match="holds files this command did not|holds a training"):
            plot.main([str(run), "--out_dir", str(out), "--force"])
    assert (tmp_path / "mine" / "loss.png").read_bytes() == b"my own picture"
    chars = "abcdefghijklmnopqrstuvwxyz0123456789 "
    save_checkpoint(tmp_path / "ckpt", GPT(tiny_config()),
                    {"task": "lm", "tokenizer": {"type": "char", "chars": chars}})
    before = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    for out in (tmp_path / "ckpt", tmp_path / "ckpt" / "plots"):
        with pytest.raises(UserError, match="holds files this command did not|lies inside the"):
            plot.main([str(run), "--out_dir", str(out), "--force"])
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == before

    plot.main([str(run)])  # the default: the run's plots/
    names = {p.name for p in (run / "plots").iterdir()}
    assert names == {"loss.png", "lr.png", "accuracy.png", "confusion-run.png"}
    with pytest.raises(UserError, match="plots already exists; choose another --out_dir, or pass"):
        plot.main([str(run)])
    plot.main([str(run), "--force"])
    assert {p.name for p in (run / "plots").iterdir()} == names
    (run / "plots" / "notes.txt").write_text("mine now")
    with pytest.raises(UserError, match=r"holds files this command did not write \(.*notes.txt"):
        plot.main([str(run), "--force"])


def test_plot_takes_any_input_without_a_traceback(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "latin1").mkdir()
    (tmp_path / "latin1" / "metrics.jsonl").write_bytes(b'{"iter": 0, "note": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"^metrics file .*latin1/metrics.jsonl is not UTF-8 text"):
        plot.main([str(tmp_path / "latin1"), "--out_dir", str(tmp_path / "p0")])
    rows = ["[1, 2]", "3", "null", '"text"', '{"loss": 2.0}', '{"iter": "five", "loss": 2.0}',
            '{"iter": 1, "lr', {"iter": 2, "loss": 1.5, "lr": "high"},
            {"iter": 3, "val_confusion": [[1, 2]]},  # not square
            {"iter": 4, "val_confusion": [[1, "x"], [0, 1]]},
            {"iter": 6, "val_confusion": [[5, 0], [1, 4]]}]  # no accuracy or names: still drawn
    a, b = write_metrics(tmp_path / "a" / "run", rows), write_metrics(tmp_path / "b" / "run",
                                                                       CLASSIFIER_ROWS)
    plot.main([str(a), str(b), "--out_dir", str(tmp_path / "p")])
    names = {p.name for p in (tmp_path / "p").iterdir()}
    assert {"confusion-a-run.png", "confusion-b-run.png", "loss.png"} <= names  # both, by path
    assert plot.run_names([a, b]) == ["a/run", "b/run"]
    assert plot.run_names([tmp_path / "a" / "run", tmp_path / "b"]) == ["run", "b"]


def test_bench_race_never_touches_the_out_dirs_it_is_given(tmp_path, capsys):
    writer = tmp_path / "writer.py"
    writer.write_text("import json, os, sys\n"
                      "out = sys.argv[1].split('=', 1)[1]\n"
                      "assert not os.path.exists(out)  # every round starts afresh\n"
                      "os.makedirs(out)\n"
                      "row = json.dumps({'iter': 1, 'val_loss': 1.25})\n"
                      "open(os.path.join(out, 'metrics.jsonl'), 'w').write(row)\n")
    existing = tmp_path / "my-run"
    existing.mkdir()
    (existing / "metrics.jsonl").write_text("precious\n")
    python = shlex.quote(sys.executable)
    command = f"{python} {shlex.quote(str(writer))} --out_dir={shlex.quote(str(existing))}"
    bench.main(["race", command, command.replace("my-run", "new-run"), "--rounds", "2"])
    assert "final val_loss 1.2500 [1.2500-1.2500]" in capsys.readouterr().out
    assert (existing / "metrics.jsonl").read_text() == "precious\n"
    assert not (tmp_path / "new-run").exists()
    with pytest.raises(UserError, match="bench.py race needs --out_dir=DIR in each command"):
        bench.main(["race", f"{sys.executable} {writer}"])
    failing = f"{python} -c 'raise SystemExit(3)' --out_dir=x"
    with pytest.raises(UserError, match=r"the command failed \(exit status 3\)"):
        bench.main(["race", failing, "--rounds", "1"])


# --------------------------------------------------------------------------------------------------
# Predictions that a spreadsheet opens safely; one preparation of a text; float32 losses


def test_predictions_are_safe_to_open_in_a_spreadsheet(tmp_path):
    cells = ("=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "ok", "a=b", 3)
    assert [spreadsheet_safe(c) for c in cells] == \
        ["'=1+2", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "ok", "a=b", 3]
    ckpt = classifier(tmp_path / "cls", labels=("=HYPERLINK(\"http://x\")", "fine"))
    dangerous = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(1)", "\tsum", "\rsum", "a plain text"]
    texts = write_jsonl(tmp_path / "t.jsonl", [{"text": t, "label": "=2*3"} for t in dangerous])
    rows = predict(ckpt, texts, tmp_path / "p.csv")
    assert [r["text"] for r in rows] == ["'" + t for t in dangerous[:-1]] + ["a plain text"]
    assert {r["label"] for r in rows} == {"'=2*3"}
    assert {r["predicted"] for r in rows} <= {"'=HYPERLINK(\"http://x\")", "fine"}
    starts = ("=", "+", "-", "@", "\t", "\r")
    assert not any(cell.startswith(starts) for r in rows for cell in r.values())


def test_a_text_is_prepared_for_a_classifier_the_same_way_on_every_path(tmp_path, capsys):
    ckpt = classifier(tmp_path / "cls")
    model, info = load_model(ckpt)
    # a break last: a random model's verdict depends mostly on a text's last token
    review = "A slow start.<br /><br />Then it is wonderful, truly.<BR>Go and see it<br />"
    with open(tmp_path / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), (review, "positive"), ("bad", "negative")])
    split = read_labelled(tmp_path / "train.csv", "", "", GPT2Tokenizer(), 64, "head",
                               tmp_path / "c")

    def probabilities(ids):
        x, lengths = pad_batch([ids], 50256)
        with torch.no_grad():
            return torch.softmax(model.eval()(x, lengths)[0], dim=-1)[0].tolist()

    trained = probabilities(split.tokens[0].tolist())  # as training reads it
    raw = probabilities(GPT2Tokenizer().encode(review))
    assert max(abs(a - b) for a, b in zip(trained, raw)) > 0.01  # the preparation matters here

    capsys.readouterr()
    sample.main(["--out_dir", str(ckpt), "--text", review, "--device=cpu", "--dtype=float32"])
    printed = capsys.readouterr().out.split("[")[1].split("]")[0].split()[1::2]
    assert [float(p) for p in printed] == pytest.approx(trained, abs=1e-3)
    (tmp_path / "texts.txt").write_text(review + "\n")
    sample.main(["--out_dir", str(ckpt), "--file", str(tmp_path / "texts.txt"), "--device=cpu",
                 "--dtype=float32"])
    assert capsys.readouterr().out.split("[")[1].split("]")[0].split()[1::2] == printed
    rows = predict(ckpt, write_jsonl(tmp_path / "t.jsonl", [{"text": review}]), tmp_path / "p.csv")
    assert [float(rows[0][f"p_{n}"]) for n in info.labels] == pytest.approx(trained, abs=1e-6)


def test_losses_are_float32_from_bf16_logits():
    torch.manual_seed(0)
    model = sample.for_inference(GPT(tiny_config()), setup_runtime("cpu", "bfloat16"))
    T = model.config.block_size
    ids = torch.randint(0, 37, (T + 1,)).tolist()
    x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    with torch.no_grad():
        logits, bf16_loss = model(x, y)
    assert logits.dtype == torch.bfloat16
    expected = F.cross_entropy(logits.float()[0], y[0]).item()
    assert F.cross_entropy(logits[0], y[0]).item() != pytest.approx(expected, rel=1e-4)  # bf16: off
    assert bf16_loss.item() == pytest.approx(expected, rel=1e-6)  # the model's own: float32
    loss, count = evaluate.language_model_loss(model, ids, 1, "cpu")
    assert count == T and loss == pytest.approx(expected, rel=1e-6)

    cls = GPTClassifier(tiny_config(n_classes=3))
    cls = sample.for_inference(cls, setup_runtime("cpu", "bfloat16"))
    x, lengths = torch.randint(0, 37, (4, 9)), torch.tensor([9, 5, 3, 1])
    labels = torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        logits, _ = cls(x, lengths)
    metrics = evaluate_classifier(cls, [(x, lengths, labels)], 3)
    expected = F.cross_entropy(logits.float(), labels).item()
    assert metrics["loss"] == pytest.approx(expected, rel=1e-6)
