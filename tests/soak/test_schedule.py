"""The fault schedule is a pure function of its seed (a run can be repeated) and covers every
kind of fault at the rate asked for."""

from __future__ import annotations

import itertools

import pytest

from soak.schedule import Kind, counts, make_schedule


def test_same_seed_same_schedule() -> None:
    assert make_schedule(7, 600) == make_schedule(7, 600)
    assert make_schedule(7, 600) != make_schedule(8, 600)


def test_ten_minutes_bring_well_over_a_hundred_faults_of_every_kind() -> None:
    faults = make_schedule(1, 600, mean_gap=4.0)
    assert len(faults) >= 120
    assert set(counts(faults)) == {k.value for k in Kind}
    times = [f.at for f in faults]
    assert times == sorted(times)
    assert all(5.0 < t < 600 for t in times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 2.0 - 1e-3 and max(gaps) <= 6.0 + 1e-3


def test_lasting_faults_have_a_duration_and_instant_ones_none() -> None:
    for fault in make_schedule(3, 600):
        lasting = fault.kind in (Kind.DISK_FULL, Kind.STALL, Kind.PAUSE_CLIENT)
        assert (fault.seconds > 0) == lasting, fault
        assert 0.0 <= fault.pick < 1.0
        if fault.kind == Kind.DISK_FULL:
            assert fault.room >= 0


def test_weights_choose_the_kinds() -> None:
    only = make_schedule(5, 300, weights={Kind.POWER_CUT: 1.0})
    assert only and {f.kind for f in only} == {Kind.POWER_CUT}


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        make_schedule(1, 0)
    with pytest.raises(ValueError, match="positive"):
        make_schedule(1, 60, mean_gap=0)
