#!/usr/bin/env python3
"""Turns a bench/compare result (JSON) into a Markdown report, the ratios of cadenas to its
peers, and plots; puts the report into BENCHMARKS.md between the bench/compare markers.

    python3 bench/report.py bench/results/compare-STAMP.json [--no-benchmarks-md]

Plots need matplotlib: bench/compare installs it into bench/.venv/ and runs this file with that
interpreter; without matplotlib the report is written without plots.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BEGIN = "<!-- bench/compare:begin (written by bench/compare; edits here are overwritten) -->"
END = "<!-- bench/compare:end -->"
STORE_ORDER = ["memory", "sqlite", "redis", "redlock", "postgres", "postgres-session", "mysql",
               "mysql-session", "etcd", "dynamodb"]


def n(x):
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def us(x):
    if x >= 10_000:
        return f"{x / 1000:,.0f} ms"
    if x >= 1000:
        return f"{x / 1000:.2g} ms"
    return f"{x:.3g} µs"


def order(entries):
    def key(e):
        rank = {"cadenas": 0, "ceiling": 1, "peer": 2}[e["kind"]]
        return (STORE_ORDER.index(e["store"]) if e["store"] in STORE_ORDER else 99, rank, e["series"])
    return sorted(entries, key=key)


def cycles_of(result, series, tasks):
    for e in result["cycles"]:
        if e["series"] == series and e["tasks"] == tasks:
            return e["cycles_per_sec"]
    return None


def handoff_of(result, series):
    return next((h for h in result["handoff"] if h["series"] == series), None)


def ratios(r):
    """(comparison, figure) rows: cadenas against the peers and ceilings of the same run."""
    rows = []

    def ratio(what, a, b):
        if a is not None and b is not None:
            rows.append((what, f"{n(a)} / {n(b)} = **{a / b:.2f}×**"))

    tasks = r["settings"]["tasks"]
    peers = [
        ("redis", "raw redis-rs (SET NX PX + EVALSHA)"),
        ("redis", "rslock 0.10"),
        ("redis", "Verrou, Redis"),
        ("redlock", "rslock 0.10, 5 nodes"),
        ("memory", "Verrou, memory"),
        ("postgres", "the store's lease statements, sqlx loop (ceiling)"),
        ("postgres", "pgbench: pg_try_advisory_lock + pg_advisory_unlock (ceiling)"),
        ("postgres", "Verrou, Knex on PostgreSQL"),
        ("mysql", "the store's lease transaction, sqlx loop (ceiling)"),
        ("mysql", "GET_LOCK/RELEASE_LOCK, sqlx loop (ceiling)"),
        ("mysql", "Verrou, Knex on MariaDB"),
        ("postgres-session", "advisory locks, sqlx loop"),
        ("mysql-session", "GET_LOCK/RELEASE_LOCK, sqlx loop (ceiling)"),
        ("dynamodb", "Verrou, DynamoDB (dynalite)"),
    ]
    for store, peer in peers:
        for t in tasks:
            ratio(f"{store}, {t} task{'s' if t > 1 else ''}: cadenas / {peer}",
                  cycles_of(r, f"cadenas, {store}", t), cycles_of(r, peer, t))
    return rows


def markdown(r, plots, base=""):
    """The report; links are relative to the repository root with `base` in front (for a file
    written elsewhere)."""
    m, v, load = r["machine"], r["versions"], r["load"]
    tasks = r["settings"]["tasks"]
    s = r["settings"]
    out = [
        f"Run of {r['date']} (`{r['command']}`, {r['seconds'] // 60} min; JSON: "
        f"[{r['json']}]({base}{r['json']})). Machine: {m['cores']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB, Linux {m['kernel']}. Load: 1-minute load average "
        f"{load['during_1min_loadavg']['median']:.1f} (from {load['during_1min_loadavg']['min']:.1f} "
        f"to {load['during_1min_loadavg']['max']:.1f}) during the run, on {m['cores']} cores shared "
        "with other jobs, so absolute figures are noisy; the ratios within this run are the point.",
        "",
        f"Versions: {v['rustc']}; {v['redis'].split(' sha')[0]}; PostgreSQL {v['postgres'].split('server ')[-1]}; "
        f"MariaDB {v['mariadb']}; Node.js {v['node']}; "
        + ", ".join(f"{k} {x}" for k, x in v["rust_peer_crates"].items()) + "; "
        + ", ".join(f"{k} {x}" for k, x in v["node_packages"].items()) + f"; cadenas {v['cadenas']}.",
        "",
        f"Each figure is the median of {s['repeat']} interleaved runs of {s['seconds_per_sample']} s. "
        "Each task works on its own keys. cadenas figures come from `cadenas bench` "
        "(a multi-thread runtime on every core); Redlock runs on 5 local redis-server nodes.",
        "",
        "#### Acquire+release cycles/s",
        "",
        "| store | who | " + " | ".join(f"{t} task{'s' if t > 1 else ''}" for t in tasks) + " |",
        "|---|---|" + "---:|" * len(tasks),
    ]
    seen, failed = set(), []
    for e in order(r["cycles"]):
        if e["series"] in seen:
            continue
        seen.add(e["series"])
        name = f"**{e['series']}**" if e["kind"] == "cadenas" else e["series"]
        cells = []
        for t in tasks:
            x = next((x for x in r["cycles"] if x["series"] == e["series"] and x["tasks"] == t), None)
            c = x and x["cycles_per_sec"]
            cell = f"**{n(c)}**" if c and e["kind"] == "cadenas" else n(c)
            if x and x.get("failures"):
                failed.append((e["series"], t, len(x["failures"]), len(x["failures"]) + len(x["runs"]),
                               x["failures"][0].strip().splitlines()[-1]))
                cell += f" ({len(failed)})"
            cells.append(cell)
        out.append(f"| {e['store']} | {name} | " + " | ".join(cells) + " |")
    for i, (series, t, k, of, why) in enumerate(failed, 1):
        out.append(f"{'' if i > 1 else chr(10)}({i}) {series}, {t} tasks: {k} of {of} runs failed: `{why[:300]}`  ")
    out += ["", "cadenas with all tasks on one key (contended), cycles/s:", "",
            "| store | " + " | ".join(str(t) for t in tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for store in STORE_ORDER:
        row = [next((e.get("contended_cycles_per_sec") for e in r["cycles"]
                     if e["series"] == f"cadenas, {store}" and e["tasks"] == t), None) for t in tasks]
        if any(row):
            out.append(f"| {store} | " + " | ".join(n(c) for c in row) + " |")
    out += ["", "#### Hand-off latency (the holder releases → the blocked waiter holds the lock)", "",
            "cadenas waiters are woken by the store's release notification; the polling peers' "
            "holders keep the lock for a random part of the peer's poll period, so their release "
            "falls at a random point of the waiter's sleep.", "",
            "| store | who | samples | p50 | p95 | p99 | max |", "|---|---|---:|---:|---:|---:|---:|"]
    for h in order(r["handoff"]):
        q = h["quantiles_us"]
        name = f"**{h['series']}**" if h["kind"] == "cadenas" else h["series"]
        p50 = f"**{us(q[10])}**" if h["kind"] == "cadenas" else us(q[10])
        out.append(f"| {h['store']} | {name} | {h['samples']:,} | {p50} | {us(q[19])} | {us(h['p99_us'])} | {us(h['max_us'])} |")
    if r["scale"]:
        out += ["", "#### Scale: other locks held during the run (one task)", "",
                "| store | locks held | cycles/s | vs 1 held | bytes per held lock | time to take them |",
                "|---|---:|---:|---:|---:|---:|"]
        for x in r["scale"]:
            one = next(y["cycles_per_sec"] for y in r["scale"] if y["store"] == x["store"] and y["held"] == 1)
            b = x["bytes_per_held_lock"]
            out.append(f"| {x['store']} | {x['held']:,} | {n(x['cycles_per_sec'])} | {x['cycles_per_sec'] / one:.2f}× | "
                       f"{n(b) if b else '–'} | {x['held_fill_secs']:.1f} s |")
        out += ["", "Bytes per held lock: memory store = growth of the `cadenas bench` process's RSS "
                "(the store's map and its entries); Redis = growth of the server's `used_memory` "
                "(lock key, state hash and fence counter)."]
    out += ["", "#### cadenas against its peers and the servers' ceilings, in this run", "",
            "| comparison | cycles/s |", "|---|---|"]
    for what, fig in ratios(r):
        out.append(f"| {what} | {fig} |")
    if plots:
        out += ["", *[f"![{alt}]({base}{p})" for alt, p in plots]]
    return "\n".join(out) + "\n"


def plot(r, stamp):
    """SVG plots next to the JSON; returns [(alt text, path from the repo root)]."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not found: no plots", file=sys.stderr)
        return []
    plots = []
    stores = [s for s in STORE_ORDER if any(e["store"] == s for e in r["cycles"])]
    rows = (len(stores) + 2) // 3
    fig, axes = plt.subplots(rows, 3, figsize=(16, 4.75 * rows), squeeze=False)
    for ax, store in zip(axes.flat, stores):
        for e in order([e for e in r["cycles"] if e["store"] == store and e["tasks"] == r["settings"]["tasks"][0]]):
            pts = sorted((x["tasks"], x["cycles_per_sec"]) for x in r["cycles"]
                         if x["series"] == e["series"] and x["cycles_per_sec"])
            style = {"cadenas": dict(lw=2.8, color="black"), "ceiling": dict(ls="--", lw=1.5),
                     "peer": dict(lw=1.3)}[e["kind"]]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, label=e["series"], **style)
        ax.set_xscale("log", base=2)
        ax.set_xticks(r["settings"]["tasks"], [str(t) for t in r["settings"]["tasks"]])
        ax.set_yscale("log")
        ax.set_title(store)
        ax.set_xlabel("tasks")
        ax.set_ylabel("acquire+release cycles/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"cycles/s vs tasks (bench/compare, {r['date'][:10]}, median of {r['settings']['repeat']})")
    fig.tight_layout()
    path = RESULTS / f"compare-{stamp}-cycles.svg"
    fig.savefig(path)
    plots.append(("cycles/s vs tasks per store and peer", str(path.relative_to(ROOT))))
    plt.close(fig)

    fig, axes = plt.subplots(rows, 3, figsize=(16, 4.75 * rows), sharex=True, squeeze=False)
    for ax, store in zip(axes.flat, stores):
        for h in order([h for h in r["handoff"] if h["store"] == store]):
            style = {"cadenas": dict(lw=2.8, color="black"), "ceiling": dict(ls="--", lw=1.5),
                     "peer": dict(lw=1.3)}[h["kind"]]
            ax.plot(h["quantiles_us"], [i * 5 for i in range(21)], marker=".", label=h["series"], **style)
        ax.set_xscale("log")
        ax.set_title(store)
        ax.set_xlabel("hand-off latency, µs")
        ax.set_ylabel("percentile")
        ax.axvline(1000, color="red", lw=0.8, ls=":")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("hand-off latency distribution (red line: 1 ms)")
    fig.tight_layout()
    path = RESULTS / f"compare-{stamp}-handoff.svg"
    fig.savefig(path)
    plots.append(("hand-off latency distribution per store and peer", str(path.relative_to(ROOT))))
    plt.close(fig)

    if r["scale"]:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for store in sorted({x["store"] for x in r["scale"]}):
            pts = sorted((x["held"], x["cycles_per_sec"]) for x in r["scale"] if x["store"] == store)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"cadenas, {store}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("other locks held")
        ax.set_ylabel("acquire+release cycles/s, one task")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = RESULTS / f"compare-{stamp}-scale.svg"
        fig.savefig(path)
        plots.append(("cycles/s with other locks held", str(path.relative_to(ROOT))))
        plt.close(fig)
    return plots


def write(result, json_path, update_benchmarks_md=True):
    json_path = Path(json_path).resolve()
    stamp = json_path.stem.removeprefix("compare-")
    result["json"] = str(json_path.relative_to(ROOT))
    plots = plot(result, stamp)
    text = markdown(result, plots)
    md = json_path.with_suffix(".md")
    md.write_text(markdown(result, plots, base="../../"))
    print(f"report: {md.relative_to(ROOT)}", file=sys.stderr)
    if update_benchmarks_md:
        bm = ROOT / "BENCHMARKS.md"
        old = bm.read_text()
        block = f"{BEGIN}\n{text}{END}"
        if BEGIN in old and END in old:
            new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
        else:
            new = old.rstrip("\n") + "\n\n## bench/compare: cadenas, its peers and the servers' ceilings\n\n" + block + "\n"
        bm.write_text(new)
        print("BENCHMARKS.md updated", file=sys.stderr)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        sys.exit(__doc__)
    write(json.loads(Path(args[0]).read_text()), args[0], "--no-benchmarks-md" not in sys.argv)
