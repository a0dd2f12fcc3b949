"""Run ids and the registry of live runs that can be cancelled from anywhere (panel, widget, code)."""

from __future__ import annotations

import itertools
import os
import threading

_counter = itertools.count(1)
_live: dict[str, threading.Event] = {}
_lock = threading.Lock()


def new_run_id(kind: str) -> str:
    """A run id unique within this process and readable in the panel, e.g. ``gen-4242-3``."""
    prefix = {"generate": "gen", "train": "train", "bench": "bench"}.get(kind, kind)
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


def register(run: str) -> threading.Event:
    """Mark ``run`` live; the returned event is set when someone asks it to stop."""
    flag = threading.Event()
    with _lock:
        _live[run] = flag
    return flag


def unregister(run: str) -> None:
    with _lock:
        _live.pop(run, None)


def cancel(run: str) -> bool:
    """Ask a live run to stop; False when no such run is live (already ended or unknown)."""
    with _lock:
        flag = _live.get(run)
    if flag is None:
        return False
    flag.set()
    return True


def live() -> list[str]:
    """Ids of the runs still in progress."""
    with _lock:
        return list(_live)
