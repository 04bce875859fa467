"""Worker ids: unique names for the processes that claim uploads, from which a later
process of the same host and PID namespace can tell that one died."""

from __future__ import annotations

import functools
import os
import secrets
import socket

__all__ = ["dead_local_worker", "default_worker_id"]


def default_worker_id() -> str:
    """``host:pid:random@scope``: unique, and lets a later process tell that it died.

    ``scope`` names the kernel boot and the PID namespace the pid belongs to, so only a
    process that sees the same pids judges whether it is alive: containers that share a
    hostname but not a PID namespace never take each other's uploads. Where the scope
    cannot be read (no ``/proc``), it is left out and liveness is never judged.
    """
    scope = _pid_scope()
    suffix = f"@{scope}" if scope else ""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}{suffix}"


@functools.cache
def _pid_scope() -> str:
    """This process's boot id and PID namespace, or "" where they cannot be read."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip().replace("-", "")[:12]
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot}.{namespace}" if boot else ""


def dead_local_worker(worker: str | None) -> bool:
    """True when ``worker`` names a process of our PID namespace that no longer exists.

    Ids without a scope (from older versions) or from another scope are never judged.
    """
    if worker is None:
        return False
    head, _, scope = worker.rpartition("@")
    if not scope or scope != _pid_scope():
        return False
    parts = head.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
