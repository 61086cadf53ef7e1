"""Bar chart of a bench/run.sh run: one panel per figure, one bar per path.

usage: chart.py RESULTS.tsv OUT.png TITLE
RESULTS.tsv holds `path<TAB>figure<TAB>value` lines; values that are not numbers
(missing, failed) are drawn as an empty slot marked "n/a".
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PATHS = [
    ("direct", "direct\nloopback"),
    ("nexd-nexd", "nexd ↔\nnexd"),
    ("nexd-wggo", "nexd ↔\nwg-go"),
    ("wggo-wggo", "wg-go ↔\nwg-go"),
    ("bt-bt", "boringtun ↔\nboringtun"),
    ("onetun-wggo", "onetun →\nwg-go"),
]
COLORS = ["#9e9e9e", "#1f77b4", "#6baed6", "#2ca02c", "#ff7f0e", "#d62728"]
# (figure key, title, log scale): throughput spans direct loopback to onetun, so log.
PANELS = [
    ("fwd", "TCP 1 stream forward, Mbit/s (log)", True),
    ("rev", "TCP 1 stream reverse, Mbit/s (log)", True),
    ("p4", "TCP 4 streams, Mbit/s (log)", True),
    ("udp", "UDP 1392 B, Mbit/s (log)", True),
    ("p50", "RTT p50, µs (lower is better)", False),
    ("cps", "new TCP connections/s", False),
    ("cpu", "CPU s per GB (lower is better)", False),
    ("rssn", "RSS with idle connections, MiB", False),
]


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def main():
    results_path, out, title = sys.argv[1], sys.argv[2], sys.argv[3]
    res = {}
    with open(results_path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                res[(parts[0], parts[1])] = parts[2]
    paths = [(k, n) for k, n in PATHS if any(p == k for p, _ in res)]
    fig, axes = plt.subplots(2, 4, figsize=(20, 9))
    for ax, (key, name, log) in zip(axes.flat, PANELS):
        vals = [num(res.get((p, key))) for p, _ in paths]
        xs = range(len(paths))
        bars = ax.bar(xs, [v or 0 for v in vals], color=COLORS[: len(paths)])
        if log:
            ax.set_yscale("log")
        for b, v in zip(bars, vals):
            label = "n/a" if v is None else f"{v:g}"
            y = b.get_height() if v else (1 if log else 0)
            ax.annotate(label, (b.get_x() + b.get_width() / 2, y), ha="center",
                        va="bottom", fontsize=9, xytext=(0, 2), textcoords="offset points")
        ax.set_title(name, fontsize=11)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([n for _, n in paths], fontsize=8)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    main()
