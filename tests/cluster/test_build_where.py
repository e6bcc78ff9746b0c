"""The build scripts' `--where`: the one place their cache rule is written. The tests that run
the binaries ask it (helpers.built_at) instead of repeating the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.helpers import built_at
from cluster.ingress import traefik_binary

SCRIPTS = [
    # script, its cache variable, its directory under ~/.cache/tapedeck, the binary
    ("build-traefik.sh", "TAPEDECK_TRAEFIK_BIN", "traefik", "traefik"),
    ("build-metrics-server.sh", "TAPEDECK_METRICS_SERVER_BIN", "metrics-server", "metrics-server"),
    ("build-netpol.sh", "TAPEDECK_NETPOL_BIN", "netpol", "kube-network-policies"),
]


@pytest.mark.parametrize(("script", "variable", "cache", "binary"), SCRIPTS)
def test_where_follows_the_cache_settings_and_builds_nothing(
    script: str,
    variable: str,
    cache: str,
    binary: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, str(tmp_path / "own"))
    path = built_at(script)
    assert path.name == binary
    assert path.parent.parent == tmp_path / "own"
    assert path.parent.name.startswith(f"{binary}-v"), path  # the pinned version's directory
    monkeypatch.delenv(variable)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert built_at(script) == tmp_path / "xdg" / "tapedeck" / cache / path.parent.name / binary
    assert not any(tmp_path.iterdir()), "--where made a directory"


def test_the_ingress_test_asks_the_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPEDECK_TRAEFIK_BIN", str(tmp_path))
    assert traefik_binary() == built_at("build-traefik.sh")
    assert traefik_binary().parent.parent == tmp_path
