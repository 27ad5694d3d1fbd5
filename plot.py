"""
Draw training runs to PNG: loss, learning rate, classifier accuracy, the confusion matrix.

    python plot.py out/shakespeare                       # -> out/shakespeare/plots/*.png
    python plot.py out/run-a out/run-b --out_dir plots   # several runs overlaid
    python plot.py out/shakespeare --force               # draw again over the earlier plots

Everything comes from each run's metrics.jsonl (train.py and finetune.py write it): loss.png (the
training loss of every logged step, and the train and val loss of every evaluation), lr.png, and for
classifiers accuracy.png (val accuracy and macro-F1) and confusion-<run>.png (the confusion matrix
of the last evaluation, and of the test split when the run was tested). Runs are named by their
directory, or by as much of their path as tells them apart (a/run and b/run). Rows that cannot be
drawn (a line cut short by a crash, a row without an iteration) are skipped. Needs matplotlib (pip
install matplotlib); nothing else in the project does.

The PNGs go into a new directory, written whole or not at all. An existing one is replaced only
with --force, and only if it holds nothing but plot.py's own earlier PNGs (marked in their
metadata): never a directory with other files, a run directory, or anything inside a checkpoint.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from ring.checkpoint import write_directory
from ring.config import UserError, check_settings, parse_config, run_main, setting
from ring.files import check_output_dir, read_text

# Written into every PNG's metadata: what tells plot.py's own earlier output (which --force may
# replace) from anything else.
SOFTWARE = "minigpt2 plot.py"


def read_metrics(run):
    """The rows of a run's metrics.jsonl that can be drawn: JSON objects with an iteration number
    ("iter"). Other lines (one cut short by a crash, ...) are skipped; a file that is not UTF-8
    text is one line naming it."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found: give run directories of train.py or finetune.py")
    rows = []
    for line in read_text(path, "metrics file").splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(row, dict) and is_number(row.get("iter")):
            rows.append(row)
    return rows


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run_names(runs):
    """A name for each run directory in a legend: its own name, or as many of the last parts of its
    path as tell it apart from the others (a/run and b/run, not run twice)."""
    parts = [Path(run).resolve().parts for run in runs]
    for n in range(1, max(map(len, parts)) + 1):
        names = ["/".join(p[-n:]) for p in parts]
        if len(set(names)) == len(names):
            break
    return names


def series(rows, key):
    """(iterations, values) of the rows that have a number for key."""
    points = [(r["iter"], r[key]) for r in rows if is_number(r.get(key))]
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
        fig.savefig(path, metadata={"Software": SOFTWARE})
    plt.close(fig)
    return drawn


def confusion_of(row, split):
    """(matrix, label names) of a row's confusion matrix for split, or None when the row has none
    that can be drawn (a square list of lists of counts)."""
    matrix = row.get(f"{split}_confusion")
    square = isinstance(matrix, list) and matrix and all(
        isinstance(r, list) and len(r) == len(matrix) and all(map(is_number, r)) for r in matrix)
    if not square:
        return None
    per_class = row.get(f"{split}_per_class")
    if isinstance(per_class, dict) and len(per_class) == len(matrix):
        return matrix, [str(label) for label in per_class]
    return matrix, [str(i) for i in range(len(matrix))]


def plot_confusion(plt, rows, name, path):
    """The confusion matrices of a classifier run's last evaluation (and its test row, if any)."""
    last = {}
    for row in rows:  # rows are in order: the last one wins
        for split in ("val", "test"):
            if confusion_of(row, split):
                last[split] = row
    if not last:
        return False
    fig, axes = plt.subplots(1, len(last), figsize=(5 * len(last), 4.5), dpi=120, squeeze=False)
    for ax, (split, row) in zip(axes[0], last.items()):
        matrix, labels = confusion_of(row, split)
        ax.imshow(matrix, cmap="Blues")
        peak = max(max(r) for r in matrix) or 1
        for i, counts in enumerate(matrix):
            for j, n in enumerate(counts):
                ax.text(j, i, f"{n:,}", ha="center", va="center",
                        color="white" if n > peak / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        accuracy = row.get(f"{split}_accuracy")
        accuracy = f": accuracy {accuracy:.3f}" if is_number(accuracy) else ""
        ax.set(xlabel="predicted", ylabel="true",
               title=f"{name}, {split} at iter {row['iter']}{accuracy}")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": SOFTWARE})
    plt.close(fig)
    return True


def draw(plt, runs, out):
    """Every figure that the runs ({name: rows}) have numbers for, as PNGs in out; returns
    their names."""
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
        png = f"confusion-{name.replace('/', '-')}.png"
        if plot_confusion(plt, rows, name, out / png):
            written.append(png)
    return written


def is_earlier_plots(directory):
    """Does directory hold nothing but PNGs that plot.py wrote (SOFTWARE in their metadata, a text
    chunk that comes before the image data)?"""
    marker = b"tEXtSoftware\0" + SOFTWARE.encode()
    for path in Path(directory).iterdir():
        if path.is_symlink() or not path.is_file() or path.suffix != ".png":
            return False
        with open(path, "rb") as f:
            if marker not in f.read(4096):
                return False
    return True


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no window, works without a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plot.py needs matplotlib: pip install matplotlib") from None
    return plt


def main(argv=None):
    args = parse_config(PlotSettings, argv, description=__doc__, prog="plot.py")
    runs = list(dict.fromkeys(Path(run).resolve() for run in args.runs))  # each run once
    out = Path(args.out_dir) if args.out_dir else Path(args.runs[0]) / "plots"
    check_output_dir(out, is_earlier_plots, args.force)
    plt = pyplot()
    rows = {name: read_metrics(run) for name, run in zip(run_names(runs), runs)}
    written = []

    def fill(tmp):
        written.extend(draw(plt, rows, tmp))
        if not written:
            raise UserError("nothing to plot: the runs' metrics.jsonl have no logged steps yet")

    write_directory(out, fill)
    print(f"wrote {', '.join(written)} to {out}")


@dataclass
class PlotSettings:
    runs: tuple = setting("run directories (each with a metrics.jsonl)", (), "required")
    out_dir: str = setting("where the PNGs go (empty: the first run's plots/)", "")
    force: bool = setting("replace --out_dir if it holds plot.py's own earlier PNGs (never "
                          "anything else)", False)

    POSITIONAL = ("runs",)

    def __post_init__(self):
        check_settings(self)


if __name__ == "__main__":
    run_main(main)
