"""The soak's checker: pure comparisons of what clients were told against what was stored.

Nothing here does I/O; nemesis.py gathers the facts (acks, stored bytes, packets, file
names, descriptor counts) and these functions say what is wrong with them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class TrackVerdict:
    violations: list[str] = field(default_factory=list)
    acknowledged: int = 0
    """The highest committed size acknowledged to the client."""
    lost: int = 0
    """Acknowledged bytes that are not stored as sent."""


def common_prefix(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix (binary search on slices: fast for megabytes)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def check_track(
    name: str, sent: bytes, acks: Iterable[int], finished: bool, stored: bytes
) -> TrackVerdict:
    """Every acknowledged byte is stored, in order; nothing stored was never sent; a finished
    upload is stored whole; acks never go back (an ack is a promise of durability)."""
    verdict = TrackVerdict()
    highest = 0
    for ack in acks:
        if ack < highest:
            verdict.violations.append(f"{name}: ack went back from {highest} to {ack}")
        highest = max(highest, ack)
    if finished:
        highest = max(highest, len(sent))
    verdict.acknowledged = highest
    if highest > len(sent):
        verdict.violations.append(f"{name}: acknowledged {highest} bytes of {len(sent)} sent")
    same = common_prefix(sent, stored)
    if same < highest:
        verdict.lost = highest - same
        verdict.violations.append(
            f"{name}: {verdict.lost} acknowledged bytes lost (stored {len(stored)}, "
            f"the first {same} as sent, acknowledged {highest})"
        )
    if same < len(stored):
        verdict.violations.append(
            f"{name}: stored bytes differ from what was sent at offset {same} "
            f"(stored {len(stored)}, sent {len(sent)})"
        )
    if finished and len(stored) != len(sent):
        verdict.violations.append(
            f"{name}: upload finished but {len(stored)} of {len(sent)} bytes are stored"
        )
    return verdict


def compare_packets(
    name: str, expected: Mapping[str, list[bytes]], got: Mapping[str, list[bytes]]
) -> list[str]:
    """The compiled MP4's packets, per stream kind, equal the one-shot compile's."""
    out = []
    for kind in sorted(set(expected) | set(got)):
        want, have = expected.get(kind, []), got.get(kind, [])
        if want == have:
            continue
        first = next(
            (i for i, (w, h) in enumerate(zip(want, have, strict=False)) if w != h),
            min(len(want), len(have)),
        )
        out.append(
            f"{name}: {kind} packets differ from a one-shot compile of the acknowledged bytes "
            f"({len(have)} vs {len(want)} expected, first difference at packet {first})"
        )
    return out


LEFTOVER = re.compile(r"(\.partial|\.tmp|\.part)$|(^|/)\.deleted-")
SCRATCH_ROOT = re.compile(r"^tapedeck-scratch-[0-9]+$")


def leftovers(data_paths: Iterable[str], scratch_paths: Iterable[str]) -> list[str]:
    """Files an interrupted write, save, publish or delete left in the data directory, and
    whatever compiles left in the stack's own temporary directory once none runs:
    `scratch_paths` are its entries and those of scratch roots (`tapedeck-scratch-UID`, where
    compiles keep one directory per run), relative to it; only the roots themselves may stay."""
    found = [
        f"leftover in the data directory: {p}" for p in sorted(data_paths) if LEFTOVER.search(p)
    ]
    found += [
        f"scratch of a dead compile: {p}"
        for p in sorted(scratch_paths)
        if not SCRATCH_ROOT.match(p)
    ]
    return found


KNOWN = {
    "scratch": re.compile(r"^scratch of a dead compile: "),
    # A stale connection of the same client (its handler delayed while storage restarted)
    # takes the track over from the live one, which is refused for good (reported).
    "superseded": re.compile(r"upload rejected: closed 4409: a newer connection took over"),
}
"""Defects already reported and being fixed elsewhere, that a run may be told to list apart
(`--known NAME`) rather than fail on."""


def split_known(violations: Iterable[str], names: Iterable[str]) -> tuple[list[str], list[str]]:
    """(violations, known defects) after setting aside those matching the named patterns."""
    patterns = [KNOWN[name] for name in names]
    rest: list[str] = []
    known: list[str] = []
    for violation in violations:
        (known if any(p.search(violation) for p in patterns) else rest).append(violation)
    return rest, known


def descriptors(idle: int, now: int, open_files: Iterable[str]) -> list[str]:
    """Storage, idle again, holds no more descriptors than when it was idle at start."""
    files = sorted(open_files)
    if now <= idle and not files:
        return []
    return [f"storage holds {now} descriptors (idle: {idle}); open files: {files or 'none'}"]


# Failure messages a compile may end with because of a fault the nemesis injected (the user
# compiles again): the disk was full while it published its output.
FAULT_EXPLAINED = re.compile(r"disk.full|no space left|storage-full", re.IGNORECASE)


def explained(error: str, disk_was_full: bool) -> bool:
    return disk_was_full and bool(FAULT_EXPLAINED.search(error))
