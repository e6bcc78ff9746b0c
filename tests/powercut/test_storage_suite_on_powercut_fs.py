"""A few of the storage contract tests (tests/storage/test_server.py), run with the data dir on
the power-cut file system: the FUSE layer must not change what storage does while it runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from harness import free_port
from powercut.mount import PowerCutDir
from tapedeck.settings import Settings

_spec = importlib.util.spec_from_file_location(
    "storage_contract_on_powercut", Path(__file__).parents[1] / "storage" / "test_server.py"
)
assert _spec is not None and _spec.loader is not None
_contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_contract)

test_create_write_read_and_layout = _contract.test_create_write_read_and_layout
test_newer_writer_takes_over = _contract.test_newer_writer_takes_over
test_session_byte_limit = _contract.test_session_byte_limit
test_output_is_published_atomically = _contract.test_output_is_published_atomically
test_delete_removes_everything = _contract.test_delete_removes_everything
test_manifests_survive_restart = _contract.test_manifests_survive_restart
test_tracks_opened_at_the_same_time_are_all_kept = (
    _contract.test_tracks_opened_at_the_same_time_are_all_kept
)
test_reads_arrive_whole_and_in_order_with_read_ahead = (
    _contract.test_reads_arrive_whole_and_in_order_with_read_ahead
)


@pytest.fixture
def storage_settings(powercut_dir: PowerCutDir) -> Settings:
    """Overrides storage_fixtures' fixture of the same name for the tests above."""
    return Settings(
        data_dir=powercut_dir.path,
        storage_addr=f"127.0.0.1:{free_port()}",
        max_session_bytes=1_000_000,
    )
