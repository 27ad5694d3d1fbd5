"""
The ring: what makes the spine (model.py, data.py, train.py, ...) dependable, and what a first
reading can skip. The spine calls each piece by one name; nothing here imports the spine.

    config.py       settings: setting(help, default, rule), config files and the command line
                    of every script, every value checked; UserError and run_main (a mistake is
                    one line and exit 1)
    runtime.py      device and precision, autocast and the gradient scaler, processes (DDP),
                    RNG state for exact resume, Ctrl-C and SIGTERM, torch.compile with a fallback
    fastpaths.py    speed paths for one kind of hardware, swapped into a built model: attention
                    and GELU kernels, packed and compiled layers
    checkpoint.py   checkpoint directories: the config.json schema, atomic and checksummed
                    writes, checked reads
    rundir.py       the run directory: one writer, no silent overwrite, metrics.jsonl and
                    TensorBoard, the progress lines
    files.py        the other outputs of a command (predictions, plots, exports): checked
                    first, nothing replaced that the command did not write, atomic, no links
    download.py     every download (progress, resume, sha256) and the Hugging Face hub
    tables.py       labelled tables (CSV/TSV/JSONL): columns, splits, the token cache
    leakage.py      texts shared between splits (exact and near duplicates)
"""
