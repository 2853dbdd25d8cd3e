#!/usr/bin/python3
"""Collects bench/results-{primary,replica,restore}.json into bench/results.json and
draws bench/chart.svg: commit throughput against plain SQLite and Litestream, cold-start
latency of a read replica against the Litestream VFS, and restore time against
`litestream restore` and `cp`. Standard library only; run by `make bench` after the
benchmarks (or alone: /usr/bin/python3 bench/chart.py).
"""
import html
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ("primary", "replica", "restore")
COLORS = {"ours": "#2b6cb0", "plain": "#718096", "litestream": "#dd6b20", "cp": "#a0aec0"}


def load():
    merged = {"generated_unix_time": int(time.time()), "parts": {}}
    for part in PARTS:
        path = os.path.join(HERE, f"results-{part}.json")
        if os.path.exists(path):
            with open(path) as f:
                merged["parts"][part] = json.load(f)
    return merged


def value(part, name):
    for r in (part or {}).get("results", []):
        if r["name"] == name:
            return r["value"]
    return None


def panels(merged):
    """[(title, unit, note, [(label, value, color)])] from whatever results exist."""
    out = []
    p = merged["parts"].get("primary")
    if p:
        bars = [
            ("plain SQLite", value(p, "plain ratio to plain"), COLORS["plain"]),
            ("litestream-vfs (ours)", value(p, "vfs-file ratio to plain"), COLORS["ours"]),
            ("litestream replicate beside it", value(p, "litestream ratio to plain"), COLORS["litestream"]),
        ]
        load = p.get("loadavg", [0])[0]
        out.append(
            (
                f"Small commits: throughput relative to plain SQLite (median; load avg {load:.1f})",
                "x",
                "higher is better",
                bars,
            )
        )
        cpu = [
            ("plain SQLite", value(p, "plain process cpu per commit"), COLORS["plain"]),
            ("litestream-vfs (ours)", value(p, "vfs-file process cpu per commit"), COLORS["ours"]),
            (
                "plain + litestream process",
                (value(p, "litestream process cpu per commit") or 0)
                + (value(p, "litestream litestream process cpu per commit") or 0),
                COLORS["litestream"],
            ),
        ]
        out.append(("CPU per commit, all processes", "µs", "lower is better", cpu))
    r = merged["parts"].get("replica")
    if r:
        bars = [
            ("litestream-vfs (ours)", value(r, "ours cold open->first row"), COLORS["ours"]),
            ("Litestream VFS 0.5.17", value(r, "litestream-vfs cold open->first row"), COLORS["litestream"]),
        ]
        out.append(("Read replica on S3, cold open to first row (1.1 GiB database)", "ms", "lower is better", bars))
    s = merged["parts"].get("restore")
    if s:
        bars = []
        for res in s.get("results", []):
            name, unit = res["name"], res.get("unit")
            if unit != "s":
                continue
            who = "ours" if "ours" in name else "litestream" if "litestream" in name else "cp" if "cp" in name else None
            if who:
                bars.append((name, res["value"], COLORS[who]))
        if bars:
            out.append(("Restore of a 1 GiB replica", "s", "lower is better", bars))
    return [(t, u, n, [b for b in bars if b[1] is not None]) for t, u, n, bars in out]


def svg(panels_):
    width, label_w, bar_h, gap = 860, 300, 22, 8
    y = 20
    parts = []
    for title, unit, note, bars in panels_:
        parts.append(
            f'<text x="10" y="{y + 14}" font-size="15" font-weight="bold">{html.escape(title)}</text>'
            f'<text x="{width - 10}" y="{y + 14}" font-size="12" text-anchor="end" fill="#555">'
            f"{html.escape(note)}</text>"
        )
        y += 26
        top = max((v for _, v, _ in bars), default=1) or 1
        for label, v, color in bars:
            w = max(1, int((width - label_w - 90) * v / top))
            parts.append(
                f'<text x="{label_w - 8}" y="{y + 15}" font-size="12" text-anchor="end">{html.escape(label)}</text>'
                f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar_h}" fill="{color}"/>'
                f'<text x="{label_w + w + 6}" y="{y + 15}" font-size="12">{v:.3g} {html.escape(unit)}</text>'
            )
            y += bar_h + gap
        y += 18
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" '
        f'font-family="DejaVu Sans, Arial, sans-serif">'
        f'<rect width="100%" height="100%" fill="white"/>' + "".join(parts) + "</svg>\n"
    )


def main():
    merged = load()
    if not merged["parts"]:
        sys.exit("no bench/results-*.json yet: run make bench first")
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(merged, f, indent=1)
    drawn = panels(merged)
    with open(os.path.join(HERE, "chart.svg"), "w") as f:
        f.write(svg(drawn))
    print(f"bench/results.json ({', '.join(merged['parts'])}) and bench/chart.svg ({len(drawn)} panels) written")


if __name__ == "__main__":
    main()
