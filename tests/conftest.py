"""tests/ on sys.path for every test file, the per-pass ones in tests/passes/ included: they
import the shared helpers as `from helpers import ...` and `from strategies import ...` like
the files beside this one (pytest itself only puts a test file's own folder there)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
