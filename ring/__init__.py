"""
The ring: what makes the spine (model.py, data.py, train.py, ...) dependable, and what a first
reading can skip. The spine calls each piece by one name; nothing here imports the spine.

What it protects work against (docs/promises.md has each promise and its test):
  - crashes and kill -9: checkpoints and outputs written atomically, exact resume;
  - Ctrl-C and SIGTERM: the step is finished, last/ saved, the run stops;
  - full disks: one line, and the previous copy intact;
  - the user's own mistakes: every setting checked, one line and exit 1, nothing replaced that a
    command did not write, one run (or preparation) at a time in a directory, leaked texts shown;
  - damaged or cut files: checksums that fail closed, shards checked by size, ids and sha256,
    tables and JSON checked where they are read;
  - untrusted downloads: what the hub sends bounded by the size it lists, checked by its sha256,
    listings of the right shape, a stalled download given up.
What it does not: other local users, links planted in the directories it writes, or local files
made to attack it (a config.json edited and its checksum rewritten, say). Those cost lines that a
reader pays for and protect no one who uses this on their own machine.

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
                    first, nothing replaced that the command did not write, atomic; JSON read
    download.py     every download (progress, resume, sha256) and the Hugging Face hub
    tables.py       tables (CSV/TSV/JSONL, .gz): named datasets, rows, columns, the token cache
"""
