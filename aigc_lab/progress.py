"""The one place progress bars are made: ``tqdm.auto`` with a refresh interval fit for notebooks.

In a notebook every refresh of a ``tqdm.auto`` bar is two or three widget messages on the kernel's
IOPub channel. tqdm's default (at most every 0.1 s) makes a one-minute training send over a
thousand; a client that reads IOPub only after the cell (nbval) then overflows ZMQ's queue and
messages are dropped. Half a second still looks live and sends a fifth as many.
"""

from __future__ import annotations

from typing import Any

MIN_INTERVAL_S = 0.5


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """A ``tqdm.auto`` bar over ``iterable`` (or a manual one with ``total=``), refreshed at most every 0.5 s."""
    from tqdm.auto import tqdm

    kwargs.setdefault("mininterval", MIN_INTERVAL_S)
    return tqdm(iterable, **kwargs)
