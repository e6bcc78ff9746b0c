"""Which storage replica owns a session: a pure rule, no I/O (docs/decisions.md).

Rendezvous (highest random weight) hashing of the session id over the replicas known when the
session is created. The count at creation is what the rule is applied to, and the result is
recorded (the manifest's `replica`, the upload token), so adding replicas later never moves a
live recording; and without a record, a lookup tries the replicas in the rule's order for the
current count, where the owner comes first unless replicas were added since.
"""

from __future__ import annotations

import hashlib

MAX_REPLICAS = 1000
"""A sanity bound (a StatefulSet of storage pods is a handful)."""


def _weight(session_id: str, replica: int) -> int:
    digest = hashlib.sha256(f"{session_id}\n{replica}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def ranking(session_id: str, replicas: int) -> list[int]:
    """Every replica, the one the rule places `session_id` on first; ties (never seen with
    64-bit weights) go to the lower index, so the order is total and the same everywhere."""
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"replica count must be 1..{MAX_REPLICAS}, not {replicas}")
    return sorted(range(replicas), key=lambda r: (-_weight(session_id, r), r))


def has_room(free_bytes: float, min_free_bytes: int) -> bool:
    """Whether a replica takes new sessions: its volume has more than `min_free_bytes` free
    (`TAPEDECK_STORAGE_MIN_FREE_BYTES`; 0: always). Live sessions keep writing below it: the
    reserve is theirs. An unknown free space (NaN) is no reason to refuse."""
    return not min_free_bytes or not free_bytes < min_free_bytes


def place(session_id: str, replicas: int) -> int:
    """The replica a new session goes to, among `replicas` (indexes 0..replicas-1)."""
    return ranking(session_id, replicas)[0]
