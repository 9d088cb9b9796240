"""The float models the suites start from, read back from their training logs: a table and a plot
of test accuracy per epoch, so a reader sees how each float start was reached (and why the long
suite's needed weight decay).

The logs are Keras's `verbose=2` output of the `benchmarks/train_float_*.sh` scripts, appended
across resumed sittings: an epoch that ran twice counts with its last run.
"""
import glob
import os
import re

from benchmarks import figures

EPOCH = re.compile(r"^Epoch (\d+)/(\d+)")
METRICS = re.compile(r" - (\w+): ([0-9.]+)")
LOG_PATTERNS = ("benchmarks/results/*float*.log", "benchmarks/checkpoints/*float*.log")


def read_log(path):
    """Returns (planned epochs, {epoch: {metric: value}}) from a Keras `verbose=2` log.

    An "Epoch N/M" header whose epoch did not finish (the sitting ended) has no metrics line
    and is left out.
    """
    planned, epochs, current = 0, {}, None
    with open(path) as f:
        for line in f:
            header = EPOCH.match(line)
            if header:
                current, planned = int(header.group(1)), int(header.group(2))
                continue
            metrics = dict((name, float(value)) for name, value in METRICS.findall(line))
            if current is not None and "val_accuracy" in metrics:
                epochs[current] = metrics
                current = None
    return planned, epochs


def logs(root):
    """{name: (planned epochs, per-epoch metrics)} for every float training log under `root`
    with at least one finished epoch, named after its file."""
    found = {}
    for pattern in LOG_PATTERNS:
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            planned, epochs = read_log(path)
            if epochs:
                found[os.path.splitext(os.path.basename(path))[0]] = (planned, epochs)
    return found


def table(found):
    """Markdown table rows: epochs logged of those planned (a lost sitting leaves a gap), last
    and best test top-1, last train top-1."""
    lines = ["| training log | epochs logged | last test top-1 | best test top-1 (epoch) | "
             "last train top-1 |", "| --- | --- | --- | --- | --- |"]
    for name, (planned, epochs) in found.items():
        last = epochs[max(epochs)]
        best = max(epochs, key=lambda e: epochs[e]["val_accuracy"])
        lines.append(f"| `{name}.log` | {len(epochs)} of {planned} | "
                     f"{100 * last['val_accuracy']:.2f} | "
                     f"{100 * epochs[best]['val_accuracy']:.2f} ({best}) | "
                     f"{100 * last['accuracy']:.2f} |")
    return lines


def plot(found, path):
    """Test (solid) and train (dotted) top-1 per epoch, one colour per log."""
    with figures.figure(path, figsize=(7.5, 4.5)) as (plt, fig, ax):
        for (name, (_, epochs)), color in zip(found.items(), plt.get_cmap("tab10").colors):
            x = sorted(epochs)
            ax.plot(x, [100 * epochs[e]["val_accuracy"] for e in x], color=color, label=name)
            ax.plot(x, [100 * epochs[e]["accuracy"] for e in x], color=color, linestyle=":")
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 (%): test solid, train dotted")
        ax.set_ylim(40, 100)
        ax.set_title("float starts")
        ax.legend(fontsize=7, loc="lower right")
