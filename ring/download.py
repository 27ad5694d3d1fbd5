"""
Downloads: one function for every file this project fetches, and the Hugging Face hub's addresses.

    download(url, dest, sha256, size)     progress bar, resume of a partial file, checks
    sha256_of(path)                       the checksum every cache and checkpoint uses
    hub_endpoint(), hub_file_info(...)    where the hub is (or a mirror), and its file list

Nothing here parses what it downloads; a failure is one line that names the URL and says what to
pass instead (a local copy), because the project must work offline once the files are at hand.
"""

import functools
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ring.config import UserError
from ring.files import parse_json, read_json, write_file


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _progress(done, total, start_time, start_bytes):
    speed = (done - start_bytes) / max(time.time() - start_time, 1e-6)
    if total:
        eta = (total - done) / speed if speed > 0 else 0
        line = (f"\r  {done / 1e6:8.1f} / {total / 1e6:.1f} MB  {speed / 1e6:6.1f} MB/s  "
                f"ETA {eta:5.0f} s")
    else:
        line = f"\r  {done / 1e6:8.1f} MB  {speed / 1e6:6.1f} MB/s"
    print(line, end="", file=sys.stderr, flush=True)


def _fetch(url, part, have, limit, what, timeout):
    """Append the bytes of url after the first `have` to part (all of them when have is 0), never
    more than limit bytes in all, never waiting more than timeout seconds for the next 64 KiB."""
    request = urllib.request.Request(url, headers={"User-Agent": "minigpt2"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    resuming = f" (resuming at {have / 1e6:.1f} MB)" if have else ""
    print(f"downloading {url}{resuming}", file=sys.stderr)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if have and response.status != 206:  # the server ignored the Range header: start over
                have = 0
            length = response.headers.get("Content-Length")
            expected = have + int(length) if length is not None else None
            done = _copy(response, part, have, limit, timeout, expected or limit)
            sys.stderr.write("\n")
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        http_error = isinstance(e, urllib.error.HTTPError)
        if http_error and e.code == 416 and have:  # "range not satisfiable": .part is all there
            part.unlink()
            raise UserError(f"the partial download {part} does not fit {url} and was removed; "
                            "run again") from None
        reason = (f"{e.code} {e.reason}" if http_error else
                  getattr(e, "reason", None) or f"{type(e).__name__}: {e}")
        raise UserError(f"could not download {url} ({reason}); download it elsewhere and pass "
                        f"{what}") from None
    # When the connection drops, read() may simply return b"" early instead of raising: compare with
    # the length the server announced, so that a cut-off file is never taken for a complete one.
    if expected is not None and done < expected:
        raise UserError(f"download of {url} stopped after {done} of {expected} bytes; run again to "
                        "resume")


def _copy(response, part, have, limit, timeout, total):
    """Copy the response's body to part (after its first `have` bytes); returns the bytes part
    holds. Past limit bytes the download is refused, and part removed; a server that sends less
    than 64 KiB in timeout seconds is given up on (part kept, to resume)."""
    start_time, done, mark = time.time(), have, (time.time(), have)
    with open(part, "ab" if have else "wb") as f:
        while chunk := response.read1(1 << 16):
            done += len(chunk)
            if limit is not None and done > limit:
                f.close()
                part.unlink()
                raise UserError(f"{response.url} sends more than the {limit:,} bytes expected; "
                                "refused")
            f.write(chunk)
            if done - mark[1] >= 1 << 16:
                mark = (time.time(), done)
            elif time.time() - mark[0] > timeout:
                raise UserError(f"download of {response.url} made no progress for {timeout} s "
                                f"(stopped after {done} bytes); run again to resume")
            _progress(done, total, start_time, have)
    return done


def download(url, dest, sha256=None, size=None, what="a local copy", timeout=30, check=None,
             max_bytes=None):
    """Download url to dest, resuming a partial download, checking size and sha256 when given. The
    bytes go to dest.part, renamed into place only when complete and verified: dest is absent or
    whole. An interrupted download leaves the .part, and the next call asks for the rest only (an
    HTTP Range request). Reading stops at size (or max_bytes): a server that sends more is refused.
    A network failure is one line naming the URL and saying how to use `what` instead. check(part),
    when given, must accept the whole file (for files with no published sha256)."""
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    limit = size if size is not None else max_bytes
    if limit is not None and have > limit:
        part.unlink()
        have = 0
    if size is None or have < size:  # a whole .part needs only checking (a Range request: 416)
        _fetch(url, part, have, limit, what, timeout)
    if size is not None and part.stat().st_size != size:
        raise UserError(f"download of {url} has {part.stat().st_size} bytes, expected {size}; run "
                        "again to resume")
    if sha256 is not None and sha256_of(part) != sha256:
        part.unlink()  # a corrupt file must not be resumed from
        raise UserError(f"download of {url} failed its sha256 check (expected {sha256}); run again")
    if check is not None and not check(part):
        part.unlink()
        raise UserError(f"download of {url} is not the file expected (its content check failed); "
                        "run again")
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------------------------------
# The Hugging Face hub

# The released GPT-2 models, our short name -> the repository on the hub (the canonical ids; the old
# short ids such as "gpt2" still redirect there, but may not forever): 124M, 355M, 774M and 1558M
# parameters, and distilgpt2 (82M, 6 layers distilled from gpt2).
HUB_MODELS = {**{name: f"openai-community/{name}"
                 for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")},
              "distilgpt2": "distilbert/distilgpt2"}
DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_endpoint(endpoint=None):
    """The hub's base URL: the argument, else $MINIGPT2_HF_ENDPOINT, else $HF_ENDPOINT (the variable
    the Hugging Face tools read, e.g. for a mirror), else https://huggingface.co."""
    chosen = (endpoint or os.environ.get("MINIGPT2_HF_ENDPOINT") or os.environ.get("HF_ENDPOINT")
              or DEFAULT_ENDPOINT)
    return chosen.rstrip("/")


def hub_file_info(endpoint, repo_id, timeout=15, kind="models", max_bytes=16 << 20):
    """{file name: (size, sha256 or None)} from the hub's file list of a model (kind "models") or a
    dataset repository ("datasets"), or {} if it cannot be had. Files in Git LFS (the weights) get
    the sha256 of the content ("lfs.oid") and its size; small files a size only. The list is read
    up to max_bytes; an entry that is not a file with a name is left out. This check is a bonus:
    when the API is unreachable or answers something else, models are downloaded without it rather
    than not at all (corpora, which need it, refuse)."""
    url = f"{endpoint}/api/{kind}/{repo_id}/tree/main"
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "minigpt2"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(max_bytes + 1)
        listing = parse_json(body[:max_bytes], url, list)
    except (urllib.error.URLError, OSError, http.client.HTTPException, UserError):
        return {}
    info = {}
    for entry in listing:
        lfs = (entry.get("lfs") if isinstance(entry, dict) else None) or {}
        if not (isinstance(entry, dict) and entry.get("type") == "file"
                and isinstance(entry.get("path"), str) and isinstance(lfs, dict)):
            continue
        oid, size = lfs.get("oid"), lfs.get("size", entry.get("size"))
        sha256 = oid if isinstance(oid, str) and len(oid) == 64 else None
        info[entry["path"]] = (size if type(size) is int and size >= 0 else None, sha256)
    return info


def download_from_hub(name, endpoint, cache, check_config):
    """Download config.json and model.safetensors of a released GPT-2 into cache; returns cache.
    check_config(path) refuses a wrong config.json before gigabytes of weights are fetched."""
    repo_id = HUB_MODELS[name]
    what = (f"a local copy: put config.json and model.safetensors from {endpoint}/{repo_id} in a "
            "directory DIR and run python hf_import.py DIR (or set MINIGPT2_HF_ENDPOINT to a "
            "mirror)")
    info = hub_file_info(endpoint, repo_id)
    for file in ("config.json", "model.safetensors"):
        size, sha256 = info.get(file, (None, None))
        if file == "model.safetensors" and sha256 is None and not (cache / file).exists():
            print(f"note: the hub's file list ({endpoint}/api/models/{repo_id}/tree/main) gave no "
                  "sha256; downloading without that check", file=sys.stderr)
        url = f"{endpoint}/{repo_id}/resolve/main/{file}"
        download(url, cache / file, sha256=sha256, size=size, what=what)
        if file == "config.json":
            check_config(cache / file)
    return cache


# Pre-tokenized corpora on the hub (dataset repositories): llm.c .bin shards of GPT-2 tokens, about
# 100M tokens each: <prefix>_val_000000.bin, then <prefix>_train_000001.bin, ...
HUB_CORPORA = {"fineweb10B": "kjj0/fineweb10B-gpt2", "finewebedu10B": "kjj0/finewebedu10B-gpt2"}
LISTING = "hub_files.json"  # the hub's file list, kept with the shards: offline runs use it


def fetch_hub_corpus(name, directory, tokens_needed=0, shards=0, endpoint=None):
    """directory, holding the validation shard and the first training shards of a pre-tokenized
    corpus on the hub (shards_to_fetch), each checked against the hub's size and sha256. Shards
    already there are not fetched again (ring/corpus.py checks them against the listing kept)."""
    repo, endpoint, directory = HUB_CORPORA[name], hub_endpoint(endpoint), Path(directory)
    url = f"{endpoint}/api/datasets/{repo}/tree/main"
    info = hub_file_info(endpoint, repo, kind="datasets")
    if info:
        write_file(directory / LISTING, lambda f: f.write(json.dumps(info)))
    elif (directory / LISTING).is_file():  # offline: the list saved by an earlier download
        info = {k: tuple(v) for k, v in read_json(directory / LISTING).items()}
    else:
        raise UserError(f"cannot get the file list of {repo} ({url}); connect, set "
                        "MINIGPT2_HF_ENDPOINT to a mirror, or download its .bin files elsewhere "
                        "and pass their folder as --dataset")
    shard_files = sorted(f for f in info if f.endswith(".bin") and "/" not in f)
    val = [f for f in shard_files if "_val_" in f][:1]
    train = [f for f in shard_files if "_train_" in f]
    if not val or not train:
        raise UserError(f"{url} lists no _val_ and _train_ .bin shards; is {repo} a corpus?")
    what = (f"the files from {endpoint}/datasets/{repo} in a folder, as --dataset=FOLDER (or "
            "set MINIGPT2_HF_ENDPOINT to a mirror)")
    for f in val + shards_to_fetch(train, info, tokens_needed, shards):
        size, sha256 = info[f]
        if sha256 is None or size is None:
            raise UserError(f"the hub's file list gives no size and sha256 for {f}; refusing an "
                            "unchecked download")
        download(f"{endpoint}/datasets/{repo}/resolve/main/{f}", directory / f, sha256, size,
                 what=what)
    return directory


def shards_to_fetch(train, info, tokens_needed, shards):
    """The first training shards that hold tokens_needed tokens (each (size - 1024) / 2 of them),
    or the first `shards` of them; at least one."""
    chosen, tokens = [], 0
    for f in train:
        if chosen and (len(chosen) >= shards if shards else tokens >= tokens_needed):
            break
        chosen.append(f)
        tokens += (info[f][0] - 1024) // 2 if isinstance(info[f][0], int) else 0
    return chosen


# HellaSwag's validation split (10,042 examples), from the authors' repository pinned at its
# last commit, so the file cannot change; read up to a bound, and checked to hold examples.
HELLASWAG_URL = ("https://raw.githubusercontent.com/rowanz/hellaswag/"
                 "a29ff8e9a04bba4bd6588223785ce105328adc57/data/hellaswag_val.jsonl")
HELLASWAG_MAX_BYTES = 64 << 20


def fetch_hellaswag(directory):
    """The path of hellaswag_val.jsonl in directory, downloaded on first use."""
    path = Path(directory) / "hellaswag_val.jsonl"

    def looks_like_hellaswag(part):
        with open(part, encoding="utf-8", errors="replace") as f:
            return '"endings"' in f.readline()

    return download(HELLASWAG_URL, path, max_bytes=HELLASWAG_MAX_BYTES, check=looks_like_hellaswag,
                    what="a local copy of rowanz/hellaswag's data/hellaswag_val.jsonl as "
                         "--hellaswag=FILE")


# --------------------------------------------------------------------------------------------------
# GPT-2's BPE files: shipped in tokenizer/, not downloaded

# tiktoken's own "gpt2" encoding downloads these two files from OpenAI's blob store on first use;
# they ship with this project instead (tokenizer/README.md), checked against the same sha256.
BPE_DIR = Path(__file__).resolve().parents[1] / "tokenizer"
BPE_FILES = {"vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
             "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"}


@functools.cache
def gpt2_encoding():
    """GPT-2's byte-level BPE as a tiktoken Encoding, built from the shipped files by tiktoken's own
    loader (which checks their sha256): offline, and nothing written to tiktoken's cache."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

    # tiktoken would keep a copy of even a local file in its cache directory; "" turns that off.
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(
            str(BPE_DIR / "vocab.bpe"), str(BPE_DIR / "encoder.json"),
            vocab_bpe_hash=BPE_FILES["vocab.bpe"], encoder_json_hash=BPE_FILES["encoder.json"])
    except (OSError, ValueError) as e:  # missing, or not the files OpenAI published
        raise UserError(f"GPT-2's BPE files in {BPE_DIR} are missing or damaged ({e}); restore "
                        "them from the repository") from None
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved
    return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: 50256}, explicit_n_vocab=50257)
