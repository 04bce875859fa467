"""Providers turn one document into card drafts."""

from __future__ import annotations

from ._base import Analysis as Analysis
from ._base import Provider as Provider
from ._base import RateHint as RateHint
from ._base import Usage as Usage
from ._base import estimate_input_tokens as estimate_input_tokens

__all__ = ["Analysis", "Provider", "RateHint", "Usage", "estimate_input_tokens"]
