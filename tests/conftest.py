"""Shared pytest fixtures and paths."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VECTORS_DIR = ROOT / "tests" / "vectors" / "v1"
