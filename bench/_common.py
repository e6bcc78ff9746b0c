"""Shared by the bench scripts: the test harness (real processes) and media makers."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import harness  # noqa: E402
import media  # noqa: E402

__all__ = ["ROOT", "harness", "media"]
