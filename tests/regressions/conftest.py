"""The regression tests the fuzzer wrote import its oracle, `tools.fuzz.oracle.evaluate`:
tools/ is not installed, so the repository root goes on sys.path (as tests/test_zoo.py
does for models/)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
