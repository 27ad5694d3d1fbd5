"""
Draw training runs to PNG: loss, learning rate, classifier accuracy, the confusion matrix.

    python plot.py out/shakespeare                       # -> out/shakespeare/plots/*.png
    python plot.py out/run-a out/run-b --out_dir plots   # several runs overlaid

Everything comes from each run's metrics.jsonl (train.py and finetune.py write it): loss.png (the
training loss of every logged step, and the train and val loss of every evaluation), lr.png, and for
classifiers accuracy.png (val accuracy and macro-F1) and confusion-<run>.png (the confusion matrix
of the last evaluation, and of the test split when the run was tested). Needs matplotlib (pip
install matplotlib); nothing else in the project does.
"""

import argparse
import json
from pathlib import Path

from ring.config import UserError, run_main


def read_metrics(run):
    """The rows of a run's metrics.jsonl (a line cut short by a crash is skipped)."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found: give run directories of train.py or finetune.py")
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def series(rows, key):
    """(iterations, values) of the rows that have key."""
    points = [(r["iter"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def plot_lines(plt, runs, keys, ylabel, title, path, log_y=False):
    """One figure: a colour per run, a line style per key. Returns whether it drew anything."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    styles = {key: style for key, style in zip(keys, ("-", "--", ":", "-."))}
    drawn = False
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"] * 9
    for (name, rows), colour in zip(runs.items(), colours):
        for key, (label, marker) in keys.items():
            x, y = series(rows, key)
            if x:
                steps = marker is None  # every logged step: thin and light, under the evaluations
                ax.plot(x, y, styles[key], color=colour, marker=marker, markersize=3,
                        linewidth=1.0 if steps else 1.6, alpha=0.6 if steps else 1.0,
                        label=f"{name}: {label}" if len(runs) > 1 else label)
                drawn = True
    if drawn:
        ax.set(xlabel="iteration (optimizer steps)", ylabel=ylabel, title=title)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    plt.close(fig)
    return drawn


def plot_confusion(plt, rows, name, path):
    """The confusion matrices of a classifier run's last evaluation (and its test row, if any)."""
    found = [(split, r) for split in ("val", "test") for r in rows if f"{split}_confusion" in r]
    last = {}
    for split, row in found:
        last[split] = row  # rows are in order: the last one wins
    if not last:
        return False
    fig, axes = plt.subplots(1, len(last), figsize=(5 * len(last), 4.5), dpi=120, squeeze=False)
    for ax, (split, row) in zip(axes[0], last.items()):
        matrix = row[f"{split}_confusion"]
        labels = list(row.get(f"{split}_per_class", {})) or [str(i) for i in range(len(matrix))]
        ax.imshow(matrix, cmap="Blues")
        peak = max(max(r) for r in matrix) or 1
        for i, counts in enumerate(matrix):
            for j, n in enumerate(counts):
                ax.text(j, i, f"{n:,}", ha="center", va="center",
                        color="white" if n > peak / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        accuracy = row.get(f"{split}_accuracy")
        ax.set(xlabel="predicted", ylabel="true",
               title=f"{name}, {split} at iter {row['iter']}: accuracy {accuracy:.3f}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories (each with a metrics.jsonl)")
    p.add_argument("--out_dir", help="where the PNGs go (default: the first run's plots/)")
    args = p.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no window, works without a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plot.py needs matplotlib: pip install matplotlib") from None
    runs = {Path(run).resolve().name: read_metrics(run) for run in args.runs}
    out = Path(args.out_dir) if args.out_dir else Path(args.runs[0]) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    loss_keys = {"loss": ("train loss (each logged step)", None),
                 "train_loss": ("train loss (eval)", "o"),
                 "val_loss": ("val loss (eval)", "o")}
    if plot_lines(plt, runs, loss_keys, "cross-entropy", "Loss", out / "loss.png"):
        written.append("loss.png")
    if plot_lines(plt, runs, {"lr": ("learning rate", None)}, "learning rate", "Learning rate",
                  out / "lr.png"):
        written.append("lr.png")
    accuracy_keys = {"val_accuracy": ("val accuracy", "o"), "val_macro_f1": ("val macro-F1", "s")}
    if plot_lines(plt, runs, accuracy_keys, "score", "Validation accuracy and macro-F1",
                  out / "accuracy.png"):
        written.append("accuracy.png")
    for name, rows in runs.items():
        if plot_confusion(plt, rows, name, out / f"confusion-{name}.png"):
            written.append(f"confusion-{name}.png")
    if not written:
        raise UserError("nothing to plot: the runs' metrics.jsonl have no logged steps yet")
    print(f"wrote {', '.join(written)} to {out}")


if __name__ == "__main__":
    run_main(main)
