#!/usr/bin/env python3
"""Turn the JSON files of one scripts/bench.sh run into results.json, results.md
(tables, ratios against the ceilings and the peers, the targets of issue 6) and plot.png
(throughput and p99 against concurrency for each write concern and durability mode).

    python3 scripts/bench-report.py OUT_DIR
"""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])


def load(name):
    """One measurement, or the mean of its rounds (NAME.r1.json, NAME.r2.json, ...)."""
    p = out / f"{name}.json"
    if p.exists():
        return json.loads(p.read_text())
    rounds = [json.loads(f.read_text()) for f in sorted(out.glob(f"{name}.r*.json"))]
    if not rounds:
        return None
    mean = lambda xs: sum(xs) / len(xs)
    merged = dict(rounds[0])
    merged["rounds"] = len(rounds)
    merged["throughputByRound"] = [r["throughput"] for r in rounds]
    merged["throughput"] = mean([r["throughput"] for r in rounds])
    merged["ok"] = sum(r["ok"] for r in rounds)
    merged["errors"] = sum(r["errors"] for r in rounds)
    merged["latencyMs"] = {q: mean([r["latencyMs"][q] for r in rounds]) for q in rounds[0]["latencyMs"]}
    return merged


def text(name):
    p = out / name
    return p.read_text().strip() if p.exists() else None


CONC = [1, 16, 64]
MODES = ["fsync", "relaxed"]
WS = [1, 2, 3]
ceiling = {c: load(f"ceiling-c{c}") for c in CONC}
chorus = {(m, w, c): load(f"chorus-{m}-w{w}-c{c}") for m in MODES for w in WS for c in CONC}
redis = {(m, c): load(f"redis-{m}-w3-c{c}") for m in ["memory", "aof"] for c in [1, 64]}
etcd = {c: load(f"etcd-c{c}") for c in [1, 64]}
tls = {c: load(f"chorus-tls-w3-c{c}") for c in [1, 64]}
fsync = load("fsync")
big = load("big")


def tput(r):
    return r["throughput"] if r else None


def p(r, q):
    return r["latencyMs"][q] if r else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def errs(r):
    return "" if not r or not r["errors"] else f" ({r['errors']} errors)"


lines = []
add = lines.append
add(f"Machine: {text('cores.txt')} cores; every server and the load generator on it at once.")
first = chorus[("fsync", 1, 1)]
if first:
    add(f"Each point: {first['seconds']:.0f} s closed loop, 100-byte messages, keep-alive"
        + (f"; the mean of {first['rounds']} rounds, run in alternating order (the second"
           " runs the peers first, chorus, then the ceiling)." if first.get("rounds", 1) > 1 else "."))
add("")
add("### Ceilings")
add("")
add("| ceiling | concurrency | writes/s | p50 ms | p99 ms |")
add("| --- | --- | --- | --- | --- |")
if fsync:
    add(f"| fdatasync of a 100 B append (this disk) | 1 | {fmt(fsync['perSecond'])} | "
        f"{fsync['p50Ms']:.3f} | {fsync['p99Ms']:.3f} |")
for c in CONC:
    r = ceiling[c]
    add(f"| HTTP only (chorus-ceiling) | {c} | {fmt(tput(r))} | {fmt(p(r, 'p50'), 3)} | {fmt(p(r, 'p99'), 3)} |")
add("")
add("### chorus: master + 2 secondaries")
add("")
add("| durability | w | concurrency | writes/s | % of HTTP ceiling | p50 ms | p99 ms | p99.9 ms |")
add("| --- | --- | --- | --- | --- | --- | --- | --- |")
for m in MODES:
    for w in WS:
        for c in CONC:
            r = chorus[(m, w, c)]
            cl = tput(ceiling[c])
            pct = f"{100 * tput(r) / cl:.0f} %" if r and cl else "–"
            add(f"| {m} | {w} | {c} | {fmt(tput(r))}{errs(r)} | {pct} | {fmt(p(r, 'p50'), 3)} | "
                f"{fmt(p(r, 'p99'), 3)} | {fmt(p(r, 'p999'), 3)} |")
add("")
if any(tls.values()):
    add("### What TLS costs: fsync, w=3, the same set with and without TLS")
    add("")
    add("| concurrency | plain writes/s | TLS writes/s | TLS / plain | plain p50 ms | TLS p50 ms | plain p99 ms | TLS p99 ms |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for c, r in tls.items():
        base = chorus[("fsync", 3, c)]
        rel = f"{tput(r) / tput(base):.2f}" if r and base else "–"
        add(f"| {c} | {fmt(tput(base))} | {fmt(tput(r))}{errs(r)} | {rel} | {fmt(p(base, 'p50'), 3)} | "
            f"{fmt(p(r, 'p50'), 3)} | {fmt(p(base, 'p99'), 3)} | {fmt(p(r, 'p99'), 3)} |")
    add("")
if any(redis.values()) or any(etcd.values()):
    add("### Peers on the same machine")
    add("")
    add("| system | durability | concurrency | writes/s | p50 ms | p99 ms |")
    add("| --- | --- | --- | --- | --- | --- |")
    rv = text("redis-version.txt") or "Redis"
    rv = rv.split(" sha=")[0].replace("Redis server v=", "Redis ")
    for (m, c), r in redis.items():
        d = "in memory" if m == "memory" else "appendfsync always"
        add(f"| {rv}, 2 replicas, RPUSH + WAIT 2 0 | {d} | {c} | {fmt(tput(r))}{errs(r)} | "
            f"{fmt(p(r, 'p50'), 3)} | {fmt(p(r, 'p99'), 3)} |")
    ev = (text("etcd-version.txt") or "etcd").replace("etcd Version: ", "etcd ")
    for c, r in etcd.items():
        add(f"| {ev}, 3 members, put | fsync (Raft WAL) | {c} | {fmt(tput(r))}{errs(r)} | "
            f"{fmt(p(r, 'p50'), 3)} | {fmt(p(r, 'p99'), 3)} |")
    add("")
if big:
    n = big["messages"]
    per_m = 1_000_000 / n
    add(f"### A log of {n:,} messages of 100 bytes")
    add("")
    add("| measure | value |")
    add("| --- | --- |")
    add(f"| master start (scan and check the log) | {big['masterStartSeconds']:.2f} s |")
    add(f"| read all (GET /messages, streamed, {big['readBytes'] / 1e6:.0f} MB) | {big['readSeconds']:.2f} s |")
    add(f"| empty secondary catches up | {big['catchUpSeconds']:.2f} s = "
        f"{fmt(n / big['catchUpSeconds'])} messages/s |")
    add(f"| RSS per million messages: master at start / after reading and serving the catch-up | "
        f"{big['masterRssMiBAtStart'] * per_m:.1f} / {big['masterRssMiB'] * per_m:.1f} MiB |")
    add(f"| RSS per million messages: secondary after catching up | {big['secondaryRssMiB'] * per_m:.1f} MiB |")
    add("")

# The targets of issue 6.
targets = []


def target(name, value, need, ok_if_ge=True, unit="x"):
    if value is None or need is None:
        targets.append((name, "–", "–", "not measured"))
        return
    ok = value >= need if ok_if_ge else value <= need
    digits = 0 if unit == "messages/s" else 2
    shown = f"{value:.2f}{unit}" if unit == "x" else f"{value:,.{digits}f} {unit}"
    needs = f"{'≥' if ok_if_ge else '≤'} {need:,.{digits}f}{unit if unit == 'x' else ' ' + unit}"
    targets.append((name, shown, needs, "met" if ok else "NOT met"))


def ratio(a, b):
    return a / b if a and b else None


rm64 = tput(redis[("memory", 64)])
ra64 = tput(redis[("aof", 64)])
e64 = tput(etcd[64])
cl64 = tput(ceiling[64])
target("relaxed, w=3, c=64 vs Redis in memory (RPUSH + WAIT 2 0), c=64",
       ratio(tput(chorus[("relaxed", 3, 64)]), rm64), 1.0)
target("fsync, w=1, c=64 vs HTTP-only ceiling, c=64", ratio(tput(chorus[("fsync", 1, 64)]), cl64), 0.70)
target("relaxed, w=1, c=64 vs HTTP-only ceiling, c=64", ratio(tput(chorus[("relaxed", 1, 64)]), cl64), 0.70)
target("fsync, w=3, c=64 vs etcd put, c=64", ratio(tput(chorus[("fsync", 3, 64)]), e64), 3.0)
target("fsync, w=3, c=64 vs Redis appendfsync always (RPUSH + WAIT 2 0), c=64",
       ratio(tput(chorus[("fsync", 3, 64)]), ra64), 1.5)
target("relaxed, w=3, c=1: p50 vs HTTP-only p50, c=1",
       ratio(p(chorus[("relaxed", 3, 1)], "p50"), p(ceiling[1], "p50")), 3.0, ok_if_ge=False)
if big:
    target("catch-up rate", big["messages"] / big["catchUpSeconds"], 500_000, unit="messages/s")
    target("read 1M messages", big["readSeconds"] * 1_000_000 / big["messages"], 2.0,
           ok_if_ge=False, unit="s")
add("### Targets")
add("")
add("| target | measured | needed | |")
add("| --- | --- | --- | --- |")
for t in targets:
    add("| " + " | ".join(t) + " |")
add("")

(out / "results.md").write_text("\n".join(lines))
(out / "results.json").write_text(json.dumps({
    "ceiling": {str(c): r for c, r in ceiling.items()},
    "chorus": {f"{m}-w{w}-c{c}": r for (m, w, c), r in chorus.items()},
    "redis": {f"{m}-c{c}": r for (m, c), r in redis.items()},
    "etcd": {str(c): r for c, r in etcd.items()},
    "tls": {f"fsync-w3-c{c}": r for c, r in tls.items()},
    "fsync": fsync,
    "log": big,
    "targets": [dict(zip(["target", "measured", "needed", "status"], t)) for t in targets],
}, indent=2))
print("\n".join(lines))

import matplotlib  # noqa: E402  (only the plot needs it)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
colors = {1: "tab:blue", 2: "tab:orange", 3: "tab:green"}
for m, style in [("fsync", "-"), ("relaxed", "--")]:
    for w in WS:
        pts = [(c, chorus[(m, w, c)]) for c in CONC if chorus[(m, w, c)]]
        if not pts:
            continue
        xs = [c for c, _ in pts]
        ax1.plot(xs, [tput(r) for _, r in pts], style, marker="o", color=colors[w], label=f"w={w} {m}")
        ax2.plot(xs, [p(r, "p99") for _, r in pts], style, marker="o", color=colors[w], label=f"w={w} {m}")
pts = [(c, ceiling[c]) for c in CONC if ceiling[c]]
if pts:
    ax1.plot([c for c, _ in pts], [tput(r) for _, r in pts], ":", marker="s", color="black", label="HTTP-only ceiling")
    ax2.plot([c for c, _ in pts], [p(r, "p99") for _, r in pts], ":", marker="s", color="black", label="HTTP-only ceiling")
for (name, r), mk in zip([("Redis RPUSH+WAIT 2 0 (memory)", redis[("memory", 64)]),
                          ("Redis appendfsync always", redis[("aof", 64)]),
                          ("etcd 3 members put", etcd[64])], ["^", "v", "D"]):
    if r:
        ax1.plot([64], [tput(r)], mk, color="gray", label=name)
        ax2.plot([64], [p(r, "p99")], mk, color="gray", label=name)
for ax, title, ylabel in [(ax1, "Throughput", "writes/s"), (ax2, "p99 latency", "ms")]:
    ax.set_xscale("log", base=2)
    ax.set_xticks(CONC, [str(c) for c in CONC])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
ax2.set_yscale("log")
ax1.legend(fontsize=7, loc="upper left")
fig.suptitle("chorus: master + 2 secondaries, 100-byte writes, one 2-core machine")
fig.tight_layout()
fig.savefig(out / "plot.png", dpi=110)

# A point that produced no result is a broken run, whatever the other figures say.
expected = [f"ceiling-c{c}" for c in CONC] + [f"chorus-{m}-w{w}-c{c}" for m in MODES for w in WS for c in CONC]
if (out / "redis-version.txt").exists():
    expected += [f"redis-{m}-w3-c{c}" for m in ["memory", "aof"] for c in [1, 64]] + [f"etcd-c{c}" for c in [1, 64]]
expected += ["fsync", "big"]
missing = [name for name in expected if load(name) is None or (load(name).get("ok") == 0)]
if missing:
    sys.exit(f"no result for: {', '.join(missing)}")
