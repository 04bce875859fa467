"""Try the command line against a fake Anthropic API: ``python -m cardmill.testing.serve``.

It serves `FakeAnthropicServer` (the Messages API and its Message Batches, on 127.0.0.1)
until Ctrl-C or SIGTERM, and prints its base URL first, then how to point ``cardmill`` at
it::

    $ python -m cardmill.testing.serve --port 8766
    http://127.0.0.1:8766
    ...
    export ANTHROPIC_BASE_URL=http://127.0.0.1:8766 ANTHROPIC_API_KEY=fake-key
    cardmill analyze examples/ --provider anthropic

Nothing leaves the machine and nothing is billed: the answers are made from each
request's own tool schema. Needs the ``testing`` extra (h11).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections.abc import Sequence

import trio

from .._extras import require
from ..errors import MissingExtra

__all__ = ["main"]

_EXAMPLE_KEY = "fake-key"


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, not {port}")
    return port


def _seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cardmill.testing.serve",
        description="Serve a fake Anthropic Messages API on 127.0.0.1 until Ctrl-C or "
        "SIGTERM, to try cardmill without a key, a network or a bill.",
    )
    parser.add_argument("--port", type=_port, default=0, help="the TCP port (0: any free one)")
    parser.add_argument(
        "--latency", type=_seconds, default=0.2, help="seconds per answer (default 0.2)"
    )
    parser.add_argument(
        "--rpm", type=_rate, default=None, help="a hidden request limit per minute (429 past it)"
    )
    parser.add_argument(
        "--batch-delay",
        type=_seconds,
        default=2.0,
        help="seconds a message batch runs before it ends (default 2)",
    )
    return parser


async def _serve(args: argparse.Namespace) -> int:
    from ._fake_anthropic import FakeAnthropicServer

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as stops:
        try:
            server = FakeAnthropicServer(
                port=args.port,
                latency=args.latency,
                requests_per_minute=args.rpm,
                batch_delay=args.batch_delay,
            )
            async with server:
                url = server.url
                print(url, flush=True)
                print(
                    "a fake Anthropic Messages API (and Message Batches) on loopback; "
                    "any API key is accepted, nothing is billed. Try:\n"
                    f"  export ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY={_EXAMPLE_KEY}\n"
                    "  cardmill analyze examples/ --provider anthropic\n"
                    "Ctrl-C (or SIGTERM) stops it.",
                    flush=True,
                )
                async for _ in stops:
                    break
        except OSError as exc:
            message = exc.strerror or str(exc)
            print(f"cardmill.testing.serve: --port {args.port}: {message}", file=sys.stderr)
            return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C or SIGTERM; 0 then, 2 for bad arguments, a busy port or a
    missing ``testing`` extra."""
    args = _parser().parse_args(argv)
    try:
        require("h11", extra="testing", feature="python -m cardmill.testing.serve")
    except MissingExtra as exc:
        print(f"cardmill.testing.serve: {exc}", file=sys.stderr)
        return 2
    return trio.run(_serve, args)


if __name__ == "__main__":
    sys.exit(main())
