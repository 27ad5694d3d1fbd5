"""
Generate text from a checkpoint, compare two checkpoints, or classify texts with a classifier.

    python sample.py --out_dir out/shakespeare --start "ROMEO:" --num_samples 3 --max_new_tokens 500
    python sample.py --out_dir checkpoints/gpt2 --start ""     (unconditional: from <|endoftext|>)
    python sample.py --compare checkpoints/gpt2 out/book --start "The old house" --temperature 0
    python sample.py --out_dir out/cls-tweets --text "This is a great product!" --file texts.txt

--out_dir takes a run directory (its best/ checkpoint is used) or a checkpoint directory.

Generation, step by step (generate, below): run the prompt through the model once, keeping every
layer's keys and values (model.KVCache); then, token after token, turn the last position's logits
into a choice (sample_next_token: greedy, temperature, top-k, top-p), and run only that new token.
"""

from dataclasses import dataclass

import torch

from data import tokenizer_from_dict
from metrics import classify_texts
from model import KVCache
from quantize import quantize_int8
from train import load_model
from ring.config import UserError, check_settings, check_value, parse_config, run_main, setting
from ring.fastpaths import prepare_for_inference
from ring.files import read_text
from ring.runtime import setup_runtime

# --------------------------------------------------------------------------------------------------
# Generation


@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_token=None,
             generator=None, use_cache=True):
    """Continue each row of idx (B, T) by up to max_new_tokens tokens; return the whole (B, T +
    new). temperature 0 is greedy. With stop_token, a row that produced it is padded with it from
    then on, and generation ends when every row has.

    With the KV cache the prompt is run once ("prefill") and each further step runs only the newest
    token. Positions are learned and absolute, so the cache cannot simply slide once the text is
    longer than block_size: a key computed at position 700 means something different at position
    699. Past that point the model is re-run on the last block_size tokens at every step, exactly as
    without a cache, so the output is the same either way."""
    check_sampling(temperature, top_k, top_p)
    block_size = model.config.block_size
    cache = KVCache(model.config.n_layer) if use_cache else None
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    new = idx  # the tokens the model has not seen yet
    for _ in range(max_new_tokens):
        if cache is not None and cache.length + new.size(1) <= block_size:
            logits, _ = model(new, kv_cache=cache)  # (B, 1, V): only the last position
        else:
            if cache is not None:
                cache.reset()  # past block_size: recompute the window from scratch (see above)
            logits, _ = model(idx[:, -block_size:], kv_cache=cache)
        next_token = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator)
        if stop_token is not None:
            stopped = torch.full_like(next_token, stop_token)
            next_token = torch.where(finished[:, None], stopped, next_token)
            finished |= next_token[:, 0] == stop_token
        idx = torch.cat((idx, next_token), dim=1)
        new = next_token
        if stop_token is not None and bool(finished.all()):
            break
    return idx


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick the next token from logits (B, V). Returns (B, 1).

    temperature 0: the most likely token (greedy). Otherwise a draw from next_token_probs."""
    if temperature == 0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def next_token_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution (B, V) that sample_next_token draws from, for temperature > 0.

    The logits are divided by the temperature (< 1 sharpens the distribution, > 1 flattens it),
    then optionally restricted to the top_k most likely tokens and to the smallest set whose
    probability reaches top_p ("The Curious Case of Neural Text Degeneration", Holtzman et al.
    2020: nucleus sampling)."""
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p. The most likely token is
        # always kept, so that even top_p = 0 leaves something to sample (the greedy choice).
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(1, sorted_idx, drop_sorted)  # back in place
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.softmax(logits, dim=-1)


# --------------------------------------------------------------------------------------------------
# The command line

# The rules of the sampling settings, in one place: the command line (SampleSettings, below) and
# generate's Python API (check_sampling) both check them.
SAMPLING_RULES = {"temperature": (float, ">= 0"), "top_k": (int, ">= 0"),
                  "top_p": (float, "[0, 1]")}


def check_sampling(temperature, top_k, top_p):
    """The sampling settings must mean something (SAMPLING_RULES: a finite temperature >= 0, top_k
    >= 0, top_p in [0, 1]; None for top_k or top_p is no limit). Else a ValueError, as for any bad
    argument of a Python function."""
    given = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
    try:
        for name, value in given.items():
            if value is not None or name == "temperature":
                check_value(name, value, *SAMPLING_RULES[name])
    except UserError as e:
        raise ValueError(str(e)) from None


def read_prompt(start):
    return read_text(start[5:], "prompt file") if start.startswith("FILE:") else start


def prompt_ids(tokenizer, prompt):
    """The prompt as token ids. An empty prompt starts from <|endoftext|>, the token that separates
    documents in GPT-2's training data: the model then writes as if a new document began (OpenAI's
    unconditional samples are made this way)."""
    ids = tokenizer.encode(prompt)
    if ids:
        return ids
    if tokenizer.eot_token is None:
        raise UserError("this character-level model has no start-of-text token: give --start at "
                        "least one character")
    return [tokenizer.eot_token]


def generate_text(model, tokenizer, prompt, args, rt):
    """Continuations of prompt, num_samples of them, each as prompt + generated text."""
    ids = prompt_ids(tokenizer, prompt)
    x = torch.tensor([ids] * args.num_samples, dtype=torch.long, device=rt.device)
    generator = torch.Generator(device=rt.device).manual_seed(args.seed)
    out = generate(model, x, args.max_new_tokens, temperature=args.temperature,
                   top_k=args.top_k or None, top_p=args.top_p, stop_token=tokenizer.eot_token,
                   generator=generator, use_cache=not args.no_kv_cache)
    texts = []
    for row in out.tolist():
        new = row[len(ids) :]
        if tokenizer.eot_token is not None and tokenizer.eot_token in new:
            new = new[: new.index(tokenizer.eot_token)]  # drop the stop token and what follows
        texts.append(prompt + tokenizer.decode(new))
    return texts


def for_inference(model, rt, quantize="", compile=False):
    """The model ready to generate, in eval mode.

    Generating a token reads every weight from memory once, so its speed is the bytes of the weights
    over the memory's bandwidth (docs/results.md, "Sampling speed"). So the weights are converted
    once to the run's precision (bf16 halves the bytes; autocast would convert them again at every
    step), or to int8 (quantize.py: half again). Then the ring swaps in what is faster on this
    hardware (ring/fastpaths.py: packed or compiled layers, attention for one query); compile: a
    compiled decode step."""
    model.eval()
    if quantize == "int8":
        quantize_int8(model)  # from the float32 weights, before anything rounds them
    if rt.dtype != "float32":
        model.to(getattr(torch, rt.dtype))
    return prepare_for_inference(model, rt, compile, lambda: KVCache(model.config.n_layer))


def load(path, rt, quantize="", compile=False):
    model, info = load_model(path, rt.device)
    model = for_inference(model, rt, quantize, compile)
    return model, tokenizer_from_dict(info.tokenizer), info


def main(argv=None):
    args = parse_config(SampleSettings, argv, description=__doc__, prog="sample.py")
    rt = setup_runtime(args.device, args.dtype)
    torch.manual_seed(args.seed)

    if args.compare:
        prompt = read_prompt(args.start)
        for path in args.compare:
            model, tokenizer, info = load(path, rt, args.quantize, args.compile)
            if info.task == "cls":
                raise UserError(f"{path} is a classifier; --compare needs language models")
            print(f"==================== {path}")
            for text in generate_text(model, tokenizer, prompt, args, rt):
                print(text)
                print("--------------------")
        return

    model, tokenizer, info = load(args.out_dir, rt, args.quantize, args.compile)
    if info.task == "cls":
        texts = list(args.text)
        if args.file:
            lines = read_text(args.file, "--file").splitlines()
            texts += [line for line in lines if line.strip()]
        if not texts:
            raise UserError(f"{args.out_dir} is a classifier: give texts with --text or --file")
        truncation = (info.run or {}).get("truncation", "head")
        results = classify_texts(model, tokenizer, texts, info.labels, rt.device,
                                 truncation=truncation)
        for text, (label, probs) in zip(texts, results):
            shown = "  ".join(f"{name} {p:.3f}" for name, p in zip(info.labels, probs))
            one_line = text.replace("\n", "\\n")  # one result per line, whatever the text holds
            print(f"{label:>12}  [{shown}]  {one_line}")
        return
    if args.text or args.file:
        raise UserError(f"{args.out_dir} is a language model; --text/--file need a classifier "
                        "checkpoint")
    for text in generate_text(model, tokenizer, read_prompt(args.start), args, rt):
        print(text)
        print("---------------")


# --------------------------------------------------------------------------------------------------
# The settings (python sample.py --help)


@dataclass
class SampleSettings:
    out_dir: str = setting("run directory (its best/ is used) or checkpoint directory",
                           "out/shakespeare")
    compare: tuple = setting("two checkpoints, BASE TUNED: the same prompt continued by each", ())
    start: str = setting("the prompt, or FILE:path to read it from a file; empty: unconditional "
                         "(GPT-2's tokenizer only)", "\n")
    num_samples: int = setting("how many continuations", 1, ">= 1")
    max_new_tokens: int = setting("tokens to generate per sample", 200, ">= 0")
    temperature: float = setting("0 is greedy; < 1 is more conservative, > 1 more random", 0.8,
                                 SAMPLING_RULES["temperature"][1])
    top_k: int = setting("sample only from the k most likely (0: all)", 200,
                         SAMPLING_RULES["top_k"][1])
    top_p: float = setting("sample only from the smallest set of tokens with this much "
                           "probability (1: all; 0: the most likely)", 1.0,
                           SAMPLING_RULES["top_p"][1])
    seed: int = setting("random seed (same seed, same samples)", 1337, "[0, 9223372036854775807]")
    device: str = setting("auto | cpu | cuda | cuda:N | mps", "auto")
    dtype: str = setting("precision of the weights", "auto",
                         ("auto", "float32", "bfloat16", "float16"))
    no_kv_cache: bool = setting("recompute the whole context at every step", False)
    quantize: str = setting("int8: weight-only int8 weights (quantize.py), a quarter of float32's "
                            "memory; with --compile 2x float32's speed on an AVX-512 CPU, 0.2x on "
                            "an AVX2 CPU (there it saves memory, not time)", "", ("", "int8"))
    compile: bool = setting("compile the decode step (10-40 s; on a CPU it helps float32, not "
                            "bf16)", False)
    text: tuple = setting("classifier checkpoints: texts to classify (--text A --text B)", ())
    file: str = setting("classifier checkpoints: a file with one text per line (for tables, see "
                        "evaluate.py --predict)", "")

    POSITIONAL = ()  # none: every setting is a --key

    def __post_init__(self):
        check_settings(self)
        if self.compare and len(self.compare) != 2:
            raise UserError(f"--compare takes two checkpoints, BASE TUNED, not "
                            f"{len(self.compare)}")


if __name__ == "__main__":
    run_main(main)
