"""Bar chart of a bench/run.sh run: one panel per figure, one bar per path.

usage: chart.py RESULTS.tsv OUT.png TITLE
RESULTS.tsv holds `path<TAB>figure<TAB>value` lines; values that are not numbers
(missing, failed) are drawn as an empty slot marked "n/a".
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (key in the results, axis label, colour): a path keeps its colour when others are missing.
PATHS = [
    ("direct", "direct\nloopback", "#9e9e9e"),
    ("nexd-nexd", "nexd ↔\nnexd", "#1f77b4"),
    ("nexd-wggo", "nexd ↔\nwg-go", "#6baed6"),
    ("wggo-wggo", "wg-go ↔\nwg-go", "#2ca02c"),
    ("bt-bt", "boringtun ↔\nboringtun", "#ff7f0e"),
    ("onetun-wggo", "onetun →\nwg-go", "#d62728"),
]
# (figure key, title, log scale): throughput spans direct loopback to onetun, so log.
PANELS = [
    ("fwd", "TCP 1 stream forward, Mbit/s (log)", True),
    ("rev", "TCP 1 stream reverse, Mbit/s (log)", True),
    ("p4", "TCP 4 streams, Mbit/s (log)", True),
    ("udp", "UDP 1392 B, Mbit/s (log)", True),
    ("p50", "RTT p50, µs (log, lower is better)", True),
    ("cps16", "new TCP connections/s (16 clients)", False),
    ("cpu", "CPU s per GB (log, lower is better)", True),
    ("rssn", "RSS with idle connections, MiB", False),
    ("busy", "TCP 1 stream with idle connections open, Mbit/s (log)", True),
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
    paths = [p for p in PATHS if any(k == p[0] for k, _ in res)]
    fig, axes = plt.subplots(3, 3, figsize=(16, 12))
    for ax, (key, name, log) in zip(axes.flat, PANELS):
        vals = [num(res.get((p[0], key))) for p in paths]
        xs = range(len(paths))
        bars = ax.bar(xs, [v or 0 for v in vals], color=[p[2] for p in paths])
        if log:
            ax.set_yscale("log")
        for b, v in zip(bars, vals):
            x = b.get_x() + b.get_width() / 2
            if v:
                ax.annotate(f"{v:g}", (x, v), ha="center", va="bottom", fontsize=9,
                            xytext=(0, 2), textcoords="offset points")
            else:
                # No bar to stand on (0 or missing, or below a log axis): label the axis.
                ax.annotate("n/a" if v is None else "0", (x, 0), xycoords=("data", "axes fraction"),
                            ha="center", va="bottom", fontsize=9, xytext=(0, 2),
                            textcoords="offset points", color="#d62728")
        ax.set_title(name, fontsize=11)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([p[1] for p in paths], fontsize=8)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    main()
