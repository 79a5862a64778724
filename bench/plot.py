"""The chart of a result document: rates, latency percentiles, RSS over time, scaling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _bars(ax: Any, labels: list[str], values: list[float | None], title: str, unit: str) -> None:
    shown = [v or 0.0 for v in values]
    bars = ax.bar(range(len(labels)), shown, color="#4c72b0")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit)
    for bar, v in zip(bars, values, strict=True):
        ax.annotate(
            "n/a" if v is None else f"{v:,.0f}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
        )


def write_chart(doc: dict[str, Any], path: Path) -> None:
    s = doc["sections"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    f = s.get("throughput", {}).get("figures", {})
    _bars(
        axes[0][0],
        ["produce", "consumer", "naive", "COPY ceiling", "staging COPY", "Kafka read ceiling"],
        [
            f.get("produce"),
            f.get("consumer"),
            f.get("naive"),
            f.get("copy_ceiling"),
            f.get("staging_ceiling"),
            f.get("kafka_ceiling"),
        ],
        f"throughput, N={doc['params'].get('count'):,}",
        "rows or messages / s",
    )

    ax = axes[0][1]
    runs = [r for r in s.get("latency", {}).get("runs", []) if r.get("latency", {}).get("count")]
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        lat = run["latency"]
        values = [lat["p50_ms"], lat["p95_ms"], lat["p99_ms"]]
        label = run.get("label") or "?"
        xs = [x + i * width for x in range(3)]
        ax.bar(xs, values, width=width, label=label)
        for x, v in zip(xs, values, strict=True):
            ax.annotate(f"{v:,.0f}", (x, v), ha="center", va="bottom", fontsize=7)
    ax.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(3)])
    ax.set_xticklabels(["p50", "p95", "p99"])
    ax.set_ylabel("ms (processed_at - timestamp)")
    ax.set_title("end-to-end latency", fontsize=10)
    if any(r["latency"]["p99_ms"] > 20 * max(r["latency"]["p50_ms"], 1) for r in runs):
        ax.set_yscale("log")
    if runs:
        ax.legend(fontsize=8)

    ax = axes[1][0]
    for name, points in s.get("memory", {}).get("series", {}).items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name, linewidth=1)
    ax.set_xlabel("seconds since the consumer started")
    ax.set_ylabel("RSS MB")
    ax.set_title("consumer memory", fontsize=10)
    if s.get("memory", {}).get("series"):
        ax.legend(fontsize=8)

    sc = s.get("scaling", {}).get("summary", [])
    _bars(
        axes[1][1],
        [f"{r['consumers']}c / {r['partitions']}p" for r in sc],
        [r.get("rate") for r in sc],
        f"scaling (steady tx/s), N={doc['params'].get('scale_count'):,}",
        "tx / s",
    )
    m = doc["machine"]
    fig.suptitle(
        f"txmon benchmark {doc['started_at']} ({doc['mode']}), nproc={m.get('nproc')}, "
        f"commit {str(m.get('git_commit'))[:10]}{' dirty' if m.get('git_dirty') else ''}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
