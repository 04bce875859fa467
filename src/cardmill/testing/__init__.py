"""A public test kit: fakes that let you test cardmill integrations in isolation."""

from __future__ import annotations

from ._invariants import InvariantViolation as InvariantViolation
from ._invariants import check_invariants as check_invariants

__all__ = ["InvariantViolation", "check_invariants"]
