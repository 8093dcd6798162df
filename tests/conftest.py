"""Shared pytest fixtures and paths."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VECTORS_DIR = ROOT / "tests" / "vectors" / "v1"

# No per-example deadline: these machines are shared and noisy, and a slow
# example is not a failure (speed is measured in bench/, never asserted here).
from hypothesis import settings  # noqa: E402

settings.register_profile("noisy-machines", deadline=None)
settings.load_profile("noisy-machines")
