"""Run ``manage.py bench`` at several concurrencies and draw docs/performance.png.

Usage (a database and Redis db of the benchmark's own):
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bp_bench REDIS_URL=redis://127.0.0.1:6379/8 \
    SECRET_KEY=... .venv/bin/python scripts/bench_chart.py [--users 2000 --messages 3 --bots 200]
Prints every run's JSON line; writes docs/performance.json and docs/performance.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(*args: str) -> dict:
    command = [sys.executable, "manage.py", "bench", "--json", *args]
    output = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)  # noqa: S603
    report = json.loads(output.stdout.strip().splitlines()[-1])
    print(json.dumps(report), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", default="2000")
    parser.add_argument("--messages", default="3")
    parser.add_argument("--bots", default="200")
    parser.add_argument("--concurrency", default="1,2,3,4")
    parser.add_argument("--threads", default="1", help="driver threads per process")
    parser.add_argument("--draw", help="Only redraw the chart from this JSON file.")
    options = parser.parse_args()
    if options.draw:
        draw(json.loads(Path(options.draw).read_text()))
        return
    common = ["--users", options.users, "--messages", options.messages, "--bots", options.bots]
    concurrencies = [int(c) for c in options.concurrency.split(",")]
    runs = [
        bench(*common, "--concurrency", str(c), "--threads", options.threads) for c in concurrencies
    ]
    best = max(runs, key=lambda r: r["messages_per_second"])
    best_c = str(best["config"]["concurrency"])
    at_80 = bench(
        *common,
        "--concurrency",
        best_c,
        "--threads",
        options.threads,
        "--rate",
        str(round(0.8 * best["messages_per_second"], 1)),
    )
    no_cache = bench(*common, "--concurrency", best_c, "--threads", options.threads, "--no-cache")
    per_update = [
        bench(*common, "--concurrency", str(c), "--threads", options.threads, "--no-batch")
        for c in concurrencies
    ]
    result = {
        "runs": runs,
        "at_80_percent": at_80,
        "no_cache": no_cache,
        "per_update_runs": per_update,
    }
    (ROOT / "docs" / "performance.json").write_text(json.dumps(result, indent=2) + "\n")
    draw(result)


def draw(result: dict) -> None:
    """docs/performance.png: throughput and p99 against worker processes, both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(8, 4.5), dpi=100)
    right = left.twinx()
    series = [
        ("batch (runbot)", result["runs"], "-"),
        ("update by update", result.get("per_update_runs", []), ":"),
    ]
    for label, runs, style in series:
        if not runs:
            continue
        xs = [r["config"]["concurrency"] for r in runs]
        left.plot(
            xs,
            [r["messages_per_second"] for r in runs],
            "o" + style,
            color="#417690",
            label=f"msg/s, {label}",
        )
        right.plot(
            xs, [r["p99_ms"] for r in runs], "s" + style, color="#c0392b", label=f"p99, {label}"
        )
        left.set_xticks(xs)
    threads = result["runs"][0]["config"]["threads_per_process"]
    left.set_xlabel(f"worker processes ({threads} driver thread(s) each)")
    left.set_ylabel("messages per second", color="#417690")
    right.set_ylabel("p99 time to reply, Bot API time excluded (ms)", color="#c0392b")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    left.legend(handles, labels, loc="upper left", fontsize=8)
    left.set_title("manage.py bench: demo conversation, whole path, 2 cores")
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "performance.png")


if __name__ == "__main__":
    main()
