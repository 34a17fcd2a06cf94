"""The bench tests reuse the trainer tests' synthetic data helpers (tests/train/trainutil.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
