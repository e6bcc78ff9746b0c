"""The committed gRPC stubs are what `make proto` generates from proto/ today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    assert spec and spec.loader
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.generate(tmp_path)
    committed = ROOT / "services" / "tapedeck" / "_proto"
    fresh = {p.name: p.read_text() for p in tmp_path.iterdir() if p.is_file()}
    assert fresh, "generator produced nothing"
    for name, text in fresh.items():
        assert (committed / name).read_text() == text, f"{name} is stale: run `make proto`"
