"""A read-only web viewer of runs and cards: `cardmill serve`, or embed it.

Needs the ``web`` extra (``pip install 'cardmill[web]'``: Starlette, hypercorn, Jinja2);
importing this package without it raises `MissingExtra` naming the extra.
"""

from __future__ import annotations

from .._extras import require

require("starlette", "hypercorn", "jinja2", extra="web", feature="The web viewer")

from ._app import create_app as create_app  # noqa: E402
from ._serve import check_address as check_address  # noqa: E402
from ._serve import serve as serve  # noqa: E402

__all__ = ["check_address", "create_app", "serve"]
