"""When an ingest or api process takes traffic, from its storage replicas' health checks: pure,
so the rule is unit-tested without servers (webapp.py's `/readyz` asks the replicas)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StorageReadiness:
    ready: bool
    unavailable: tuple[int, ...]
    """Indexes of the replicas that did not answer (positions in TAPEDECK_STORAGE_ADDRS)."""


def storage_readiness(serving: Sequence[bool]) -> StorageReadiness:
    """Ready while at least one replica serves (docs/decisions.md, "Readiness with several
    storage replicas"). A replica that is down is down for every ingest and api pod alike:
    making them all unready would not send its sessions anywhere better, and would take the
    sessions of the replicas that serve out of reach too (no endpoints at all)."""
    unavailable = tuple(index for index, ok in enumerate(serving) if not ok)
    return StorageReadiness(ready=len(unavailable) < len(serving), unavailable=unavailable)
