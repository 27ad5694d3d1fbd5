"""
Generate text from a checkpoint, compare two checkpoints, or classify texts with a classifier checkpoint.

    python sample.py --out_dir out/shakespeare --start "ROMEO:" --num_samples 3 --max_new_tokens 500
    python sample.py --compare checkpoints/gpt2 out/book --start "The old house" --temperature 0
    python sample.py --out_dir out/cls-tweets --text "This is a great product!" --file more_texts.txt

--out_dir takes a run directory (its best/ checkpoint is used) or a checkpoint directory.
"""

import argparse
from pathlib import Path

import torch

from checkpoint import load_model
from config import UserError, run_main
from data import tokenizer_from_dict
from train import setup_runtime


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--out_dir", default="out/shakespeare", help="run directory (uses best/) or checkpoint directory")
    p.add_argument("--compare", nargs=2, metavar=("BASE", "TUNED"), help="two checkpoints to continue the same prompt side by side")
    p.add_argument("--start", default="\n", help="the prompt, or FILE:path to read it from a file")
    p.add_argument("--num_samples", type=int, default=1, help="how many continuations")
    p.add_argument("--max_new_tokens", type=int, default=200, help="tokens to generate per sample")
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy; < 1 is more conservative, > 1 more random")
    p.add_argument("--top_k", type=int, default=200, help="sample only from the k most likely tokens (0: all)")
    p.add_argument("--top_p", type=float, default=1.0, help="sample only from the smallest set with this much probability")
    p.add_argument("--seed", type=int, default=1337, help="random seed (the same seed gives the same samples)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    p.add_argument("--no_kv_cache", action="store_true", help="recompute the whole context at every step (slower)")
    p.add_argument("--text", action="append", default=[], help="classifier checkpoints: a text to classify (repeatable)")
    p.add_argument("--file", help="classifier checkpoints: a file with one text per line")
    return p.parse_args(argv)


def read_prompt(start):
    if start.startswith("FILE:"):
        path = Path(start[5:])
        if not path.is_file():
            raise UserError(f"prompt file {path} not found")
        return path.read_text(encoding="utf-8")
    return start


def generate_text(model, tokenizer, prompt, args, rt):
    """Continuations of prompt, num_samples of them, each as prompt + generated text."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise UserError("the prompt is empty after tokenization; give --start some text")
    x = torch.tensor([ids] * args.num_samples, dtype=torch.long, device=rt.device)
    generator = torch.Generator(device=rt.device).manual_seed(args.seed)
    with torch.no_grad():
        out = model.generate(x, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k or None,
                             top_p=args.top_p, stop_token=tokenizer.eot_token, generator=generator,
                             use_cache=not args.no_kv_cache)
    texts = []
    for row in out.tolist():
        if tokenizer.eot_token is not None and tokenizer.eot_token in row[len(ids):]:
            row = row[: len(ids) + row[len(ids):].index(tokenizer.eot_token)]  # drop the stop token and padding
        texts.append(tokenizer.decode(row))
    return texts


def for_inference(model, rt):
    """The model in eval mode, its weights converted once to the run's precision.

    Generating a token reads every weight from memory once, so that is what its speed depends on: bf16 weights
    halve it (GPT-2 124M on the reference CPU: 31 tokens/s against 18 in float32; README). Autocast would instead
    convert the float32 weights again at every step."""
    model.eval()
    if rt.dtype != "float32":
        model.to(getattr(torch, rt.dtype))
    return model


def load(path, rt):
    model, info = load_model(path, rt.device)
    return for_inference(model, rt), tokenizer_from_dict(info["tokenizer"]), info


def main(argv=None):
    args = parse_args(argv)
    if args.temperature < 0 or args.top_k < 0 or not 0 < args.top_p <= 1 or args.num_samples < 1 or args.max_new_tokens < 0:
        raise UserError("need temperature >= 0, top_k >= 0, 0 < top_p <= 1, num_samples >= 1, max_new_tokens >= 0")
    rt = setup_runtime(args.device, args.dtype)
    torch.manual_seed(args.seed)

    if args.compare:
        prompt = read_prompt(args.start)
        for path in args.compare:
            model, tokenizer, info = load(path, rt)
            if info.get("task") == "cls":
                raise UserError(f"{path} is a classifier; --compare needs language models")
            print(f"==================== {path}")
            for text in generate_text(model, tokenizer, prompt, args, rt):
                print(text)
                print("--------------------")
        return

    model, tokenizer, info = load(args.out_dir, rt)
    if info.get("task") == "cls":
        texts = list(args.text)
        if args.file:
            path = Path(args.file)
            if not path.is_file():
                raise UserError(f"--file {path} not found")
            texts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise UserError(f"{args.out_dir} is a classifier: give texts with --text or --file")
        from finetune import classify_texts

        for text, (label, probs) in zip(texts, classify_texts(model, tokenizer, texts, info["labels"], rt.device)):
            shown = "  ".join(f"{name} {p:.3f}" for name, p in zip(info["labels"], probs))
            print(f"{label:>12}  [{shown}]  {text}")
        return
    if args.text or args.file:
        raise UserError(f"{args.out_dir} is a language model; --text/--file need a classifier checkpoint")
    for text in generate_text(model, tokenizer, read_prompt(args.start), args, rt):
        print(text)
        print("---------------")


if __name__ == "__main__":
    run_main(main)
