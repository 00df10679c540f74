import os
import sys
from pathlib import Path

# tests import tools/ (the data generator) and tests/tiny_models.py
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network in tests
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: real trainings or subprocess runs (still part of the default test run)")
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped with a reason where none is present)")
