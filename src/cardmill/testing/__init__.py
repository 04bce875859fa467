"""A public test kit: fakes that let you test cardmill integrations in isolation.

* [`ScriptedProvider`][cardmill.testing.ScriptedProvider] — answers written in advance,
  per document, in trio time.
* [`SimulatedAPI`][cardmill.testing.SimulatedAPI] — hidden rate limits, latency,
  429/529/500, in virtual time.
* [`FakeAnthropicServer`][cardmill.testing.FakeAnthropicServer] — the Messages API and
  its Message Batches on loopback, for the real SDK (needs the `testing` extra).
* [`HiddenLimits`][cardmill.testing.HiddenLimits] — a provider's limits as it enforces
  them (token buckets), for fakes of your own.
* [`check_invariants`][cardmill.testing.check_invariants] — the storage invariants, for
  your own backend or run.
* [`make_pdf`][cardmill.testing.make_pdf] — small PDFs with real text.

To try the command line against the loopback server, run
``python -m cardmill.testing.serve`` (``--port``; Ctrl-C or SIGTERM stops it): it prints
its base URL, then the ``ANTHROPIC_BASE_URL`` to export and a command to run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._extras import require
from ._hidden import Admission as Admission
from ._hidden import HiddenLimits as HiddenLimits
from ._invariants import InvariantViolation as InvariantViolation
from ._invariants import check_invariants as check_invariants
from ._pdf import make_pdf as make_pdf
from ._scripted import ScriptedProvider as ScriptedProvider
from ._scripted import Step as Step
from ._simulated import SimulatedAPI as SimulatedAPI
from ._simulated import SimulatedStatistics as SimulatedStatistics
from ._simulated import lognormal as lognormal

if TYPE_CHECKING:
    from ._fake_anthropic import BatchItemFault as BatchItemFault
    from ._fake_anthropic import BatchSubmission as BatchSubmission
    from ._fake_anthropic import FakeAnthropicServer as FakeAnthropicServer
    from ._fake_anthropic import Fault as Fault
    from ._fake_anthropic import RecordedRequest as RecordedRequest

__all__ = [
    "Admission",
    "BatchItemFault",
    "BatchSubmission",
    "FakeAnthropicServer",
    "Fault",
    "HiddenLimits",
    "InvariantViolation",
    "RecordedRequest",
    "ScriptedProvider",
    "SimulatedAPI",
    "SimulatedStatistics",
    "Step",
    "check_invariants",
    "lognormal",
    "make_pdf",
]

_SERVER_NAMES = frozenset(
    {"BatchItemFault", "BatchSubmission", "FakeAnthropicServer", "Fault", "RecordedRequest"}
)


def __getattr__(name: str) -> object:
    # The loopback server speaks HTTP with h11, from the testing extra; the rest of the
    # kit works without it.
    if name in _SERVER_NAMES:
        require("h11", extra="testing", feature="cardmill.testing.FakeAnthropicServer")
        from . import _fake_anthropic

        return getattr(_fake_anthropic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
