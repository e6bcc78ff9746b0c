"""Storage's webhook outbox: durable, ordered, survives a restart, acknowledged once; and the
registry puts every transition in it (no gRPC: tests/webhooks/test_delivery.py runs the
processes)."""

from __future__ import annotations

from pathlib import Path

from tapedeck.settings import Settings
from tapedeck.storage import errors
from tapedeck.storage.local import LocalBackend
from tapedeck.storage.records import SessionRecord
from tapedeck.storage.registry import Change, SessionRegistry
from tapedeck.webhooks.events import transition_events
from tapedeck.webhooks.outbox import OUTBOX_DIR, Outbox


def events(n: int) -> list:  # type: ignore[type-arg]
    record = SessionRecord(id="abcdefgh-1", created_at_ms=1, expires_at_ms=2)
    return [transition_events(None, record)[0] for _ in range(n)]


def test_events_survive_a_restart_in_order_until_acknowledged(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, limit=100)
    first = events(3)
    outbox.append(first)
    outbox.append(events(1))
    reopened = Outbox(tmp_path, limit=100)  # what a storage restart sees
    pending = reopened.pending(10)
    assert [e.id for e in pending[:3]] == [e.id for e in first]
    assert [e.seq for e in pending] == sorted(e.seq for e in pending)
    assert reopened.ack([first[0].id, "msg_unknown"]) == 1
    assert reopened.ack([first[0].id]) == 0  # once
    again = Outbox(tmp_path, limit=100)
    assert len(again) == 3 and first[0].id not in {e.id for e in again.pending(10)}
    # New events sort after old ones even when every earlier file is gone.
    again.ack([e.id for e in again.pending(10)])
    later = events(1)
    Outbox(tmp_path, limit=100).append(later)
    assert Outbox(tmp_path, limit=100).pending(10)[0].seq > pending[-1].seq


def test_torn_and_damaged_files_hide_nothing_else(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, limit=100)
    outbox.append(events(1))
    root = tmp_path / OUTBOX_DIR
    (root / ".00000000000000000009.json.abcd.tmp").write_bytes(b'{"id": "msg_')  # a crash
    (root / "00000000000000000001.json").write_bytes(b"\0\0\0")  # damaged
    reopened = Outbox(tmp_path, limit=100)
    assert len(reopened) == 1
    assert not list(root.glob(".*.tmp"))


def test_an_unread_outbox_keeps_only_the_newest(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, limit=3)
    made = events(5)
    outbox.append(made)
    assert [e.id for e in outbox.pending(10)] == [e.id for e in made[2:]]
    assert len(list((tmp_path / OUTBOX_DIR).glob("*.json"))) == 3


async def test_the_registry_records_every_transition(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    outbox = Outbox(tmp_path, limit=1000)
    registry = SessionRegistry(LocalBackend(tmp_path), settings, outbox)
    made = await registry.create("abcdefgh-1")
    await registry.update(made.id, Change(finish_tracks=True))
    await registry.update(made.id, Change(begin_compile=True))
    try:
        await registry.update(made.id, Change(if_compile_generation=7, state=None))
    except errors.Conflict:
        pass  # a refused change is no event
    from tapedeck.sessions import State

    await registry.update(made.id, Change(state=State.FAILED, error="boom"))
    await registry.delete(made.id)
    got = [(e.type, e.session_id) for e in Outbox(tmp_path, limit=1000).pending(100)]
    assert got == [
        ("session.created", made.id),
        ("recording.finished", made.id),
        ("compile.started", made.id),
        ("compile.failed", made.id),
        ("session.deleted", made.id),
    ]


class BrokenOutbox(Outbox):
    """An outbox whose next write fails after the manifest was saved: what a crash (SIGKILL, a
    power cut) or a failing disk between the two leaves behind."""

    broken = True

    def append(self, events: list) -> None:  # type: ignore[type-arg]
        if self.broken:
            raise OSError(5, "Input/output error")
        super().append(events)


async def test_an_event_whose_outbox_write_failed_is_appended_by_the_next_start(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    registry = SessionRegistry(LocalBackend(tmp_path), settings, BrokenOutbox(tmp_path, 1000))
    made = await registry.create("abcdefgh-1")
    await registry.update(made.id, Change(finish_tracks=True))
    assert Outbox(tmp_path, limit=1000).pending(100) == []  # both writes failed
    # A restart: the manifest says which events of its last change may be missing.
    SessionRegistry(LocalBackend(tmp_path), settings, Outbox(tmp_path, limit=1000))
    got = [e.type for e in Outbox(tmp_path, limit=1000).pending(100)]
    assert got == ["session.created", "recording.finished"]
    # ... once: a second start finds nothing left to append.
    SessionRegistry(LocalBackend(tmp_path), settings, Outbox(tmp_path, limit=1000))
    assert [e.type for e in Outbox(tmp_path, limit=1000).pending(100)] == got
