"""The examples' tests: examples/webapp is put on sys.path, so its ``app`` imports."""

from __future__ import annotations

import sys
from pathlib import Path

WEBAPP = Path(__file__).resolve().parents[2] / "examples" / "webapp"
if str(WEBAPP) not in sys.path:
    sys.path.insert(0, str(WEBAPP))
