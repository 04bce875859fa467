"""Readers for the off-loop reading tests, in a module of their own so that a worker
process can import them by name."""

from __future__ import annotations

import os
import socket
import time

from cardmill import Document


def sleep_forever(document: Document) -> str:
    """A parser lost in a hostile file: it tells the test its process id (over a TCP
    connection to the port the document's bytes name), then never returns."""
    with socket.create_connection(("127.0.0.1", int(document.data))) as conn:
        conn.sendall(str(os.getpid()).encode())
    while True:
        time.sleep(3600)


def text(document: Document) -> str:
    """A good parser: the document's bytes as text."""
    return document.data.decode()


def interrupted(document: Document) -> str:
    """A reader stopped by Ctrl-C."""
    raise KeyboardInterrupt
