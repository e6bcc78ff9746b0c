"""The charts of docs/performance.md, drawn from the benchmarks' JSON (`--json`) as SVG.

Text stays text in the SVG (`svg.fonttype: none`), so each chart is a few kilobytes and is
committed beside docs/performance.md (docs/images/), redrawn by `make bench` for each
benchmark that ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt

plt.rcParams.update(
    {"svg.fonttype": "none", "svg.hashsalt": "tapedeck", "font.size": 9, "axes.grid": True}
)
TARGET = {"color": "0.4", "linestyle": ":", "linewidth": 1}


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


def ack_latency(levels: list[dict[str, Any]], path: Path) -> Path:
    """p99 ack against concurrent streams: Tapedeck and the bare sink, overall and steady;
    the reconnect storms as separate markers."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    styles = {"Tapedeck": "tab:blue", "bare sink": "tab:gray"}
    for server, color in styles.items():
        paced = sorted(
            (lv for lv in levels if lv["server"] == server and lv["mode"] == "paced"),
            key=lambda lv: lv["streams"],
        )
        if paced:
            xs = [lv["streams"] for lv in paced]
            ax.plot(xs, [lv["p99_ms"] for lv in paced], "o-", color=color,
                    label=f"{server}: p99 (all frames)")  # fmt: skip
            ax.plot(xs, [lv["steady_p99_ms"] for lv in paced], "s--", color=color,
                    label=f"{server}: p99 (steady state)", alpha=0.7)  # fmt: skip
        storms = [lv for lv in levels if lv["server"] == server and lv["mode"] == "storm"]
        if storms:
            label = f"{server}: p99, reconnect storm"
            xs = [lv["streams"] for lv in storms]
            ax.plot(xs, [lv["p99_ms"] for lv in storms], "*", markersize=12, color=color,
                    label=label)  # fmt: skip
    ax.axhline(250, **TARGET, label="target: 250 ms")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent 2.5 Mbit/s streams")
    ax.set_ylabel("ack latency, ms (log)")
    ax.set_title("Ack latency against streams")
    ax.legend(fontsize=7)
    return _save(fig, path)


def rss_long(long: dict[str, Any], path: Path) -> Path:
    """RSS of both processes over one long recording."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    minutes = [s / 60 for s in long["media_s"]]
    ax.plot(minutes, long["ingest_mib"], "o-", label="ingest + api")
    ax.plot(minutes, long["storage_mib"], "s-", label="storage")
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"minutes of media (streamed at {long['speed']:g}x real time)")
    ax.set_ylabel("RSS, MiB")
    ax.set_title("RSS over one long recording")
    ax.legend(fontsize=7)
    return _save(fig, path)


def time_to_mp4(cases: list[dict[str, Any]], path: Path) -> Path:
    """Time from stop to MP4 against the recording's length, Tapedeck and the naive transcode."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for kind, color in (("h264", "tab:blue"), ("vp8", "tab:orange")):
        mine = sorted((c for c in cases if c["kind"] == kind), key=lambda c: c["minutes"])
        if not mine:
            continue
        xs = [c["minutes"] for c in mine]
        ax.plot(xs, [c["tapedeck_s"] for c in mine], "o-", color=color,
                label=f"Tapedeck, {kind.upper()}")  # fmt: skip
        ax.plot(xs, [c["naive_s"] for c in mine], "x--", color=color, alpha=0.6,
                label=f"naive transcode, {kind.upper()}")  # fmt: skip
    ax.axhline(2, **TARGET, label="target (10 min H.264): 2 s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("recording length, minutes (log)")
    ax.set_ylabel("stop → MP4, s (log)")
    ax.set_title("Time to MP4 against recording length")
    ax.legend(fontsize=7)
    return _save(fig, path)
