"""Bridge between the kernel's event bus and the JupyterLab panel over the ``aigc_lab`` comm.

Events are batched: the engine's ``publish`` only appends to a list, and a flusher thread sends what is
queued at most once per half frame interval (8 ms; sooner when ``max_batch`` items wait): consecutive
tokens (training steps) of a run as one ``tokens`` (``train.steps``) message, and when more than one
message is due, all of them in publish order as one ``batch`` (at most ``max_batch`` items each). A lone
event after a quiet spell goes at once. So a fast stream neither floods the browser nor slows the engine.
One message per step was a flood: a training loop at thousands of steps per second outran the Jupyter
server's reading of the kernel's IOPub, whose ZMQ queue then dropped messages, the cell's final ``idle``
status among them, so the notebook never saw the cell finish. And one message per event was still a
flood for the browser, which pays about a millisecond per comm message whatever its size: 20 fast
training runs (an eval every 100 steps, each flushing the steps before it) made 842 messages.

The comm the kernel opens streams live events only once a panel has spoken (its first request,
normally ``history``): with no frontend listening (nbval, ``jupyter execute``, a classic notebook
without the extension) nothing would read them, and a cell that publishes for minutes would fill
the kernel's IOPub queue until ZMQ silently drops messages, the cell's final ``idle`` status
included. Everything is still recorded, and the ``history`` request replays it.

The panel sends its requests on a kernel subshell of its own (JEP 91), and the comm serves each one
on the subshell it was addressed to (``_serve_where_addressed``), so the first request is answered
while a cell runs on the main shell: Run All and long foreground cells stream live too.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .. import __version__, runs
from ..bus import EventBus, Recorder
from ..bus import bus as default_bus
from ..bus import recorder as default_recorder
from ..errors import ProtocolError
from ..events import (
    Ack,
    Batch,
    Cancel,
    Event,
    Hello,
    History,
    Message,
    Token,
    Tokens,
    TrainStep,
    TrainSteps,
    from_message,
    to_message,
)

log = logging.getLogger("aigc_lab")
TARGET_NAME = "aigc_lab"

Send = Callable[[Message], None]
MAX_ID = 256
"""Longest run or request id the bridge answers: real ids are short, and an ack echoes them back."""
_LOG_LINE = 200  # characters of the reason in an "ignored" log line


def _ignored(reason: str) -> None:
    """Log, in one short line, that an inbound message was ignored and why."""
    reason = " ".join(reason[:2 * _LOG_LINE].split())
    if len(reason) > _LOG_LINE:
        reason = reason[:_LOG_LINE - 3] + "..."
    log.warning("aigc_lab: ignored %s", reason)


def _data_of(comm_msg: Any) -> Any:
    """The ``data`` of a comm message, or None when it has none (``handle_incoming`` then ignores it)."""
    content = comm_msg.get("content") if isinstance(comm_msg, dict) else None
    return content.get("data") if isinstance(content, dict) else None


class CommBridge:
    """A bus sink that forwards events to one comm, batching tokens; handles ``cancel`` requests."""

    def __init__(
        self,
        send: Send,
        *,
        event_bus: EventBus | None = None,
        history: Recorder | None = None,
        flush_interval: float = 0.008,
        max_batch: int = 512,
        live: bool = True,
    ) -> None:
        self._send = send
        self.live = live  # False: record only, until the panel's first request
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self._pending: list[Event] = []
        self._lock = threading.Lock()  # guards _pending
        self._send_lock = threading.Lock()  # keeps message order between threads
        self._wake = threading.Event()
        self._closed = False
        self._last_flush = 0.0
        self.messages_sent = 0
        self._bus = event_bus or default_bus
        self._history = history if history is not None else default_recorder
        self._unsubscribe = self._bus.subscribe(self.on_event)
        self._thread = threading.Thread(target=self._flush_loop, name="aigc-lab-comm-flush", daemon=True)
        self._thread.start()

    # -- kernel -> panel -------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        """Bus sink: queue the event (cheap); the flusher sends it."""
        if self._closed or not self.live:
            return
        with self._lock:
            self._pending.append(event)
            n = len(self._pending)
        if n == 1 or n >= self.max_batch:
            self._wake.set()

    def flush(self) -> None:
        """Send everything queued now."""
        with self._send_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        self._last_flush = time.perf_counter()
        self._send_events(pending)

    def _send_events(self, events: Sequence[Event]) -> None:
        """Send ``events`` in order: each run's consecutive tokens (steps) as one message of at most ``max_batch``
        items, and the messages in ``batch`` es of at most ``max_batch`` items (a message that is not a batch of
        items counts one); a batch of one message is sent as that message."""
        group: list[Event] = []
        weight = 0

        def close() -> None:
            nonlocal group, weight
            if group:
                self._emit(to_message(group[0] if len(group) == 1 else Batch(messages=tuple(group))))
            group, weight = [], 0

        for message in self._coalesced(events):
            size = len(message.items) if isinstance(message, (Tokens, TrainSteps)) else 1
            if weight + size > self.max_batch:
                close()
            group.append(message)
            weight += size
        close()

    def _coalesced(self, events: Sequence[Event]) -> Iterator[Event]:
        """``events`` with each run of consecutive ``Token`` s (``TrainStep`` s) of one run, and the items of
        ``Tokens`` / ``TrainSteps`` (a replay's), as batches of at most ``max_batch`` items."""
        start = 0
        for n in range(1, len(events) + 1):
            first = events[start]
            if n < len(events) and isinstance(first, (Token, TrainStep)) and events[n].run == first.run \
                    and type(events[n]) is type(first):
                continue
            if isinstance(first, (Token, TrainStep, Tokens, TrainSteps)):
                items = events[start:n] if isinstance(first, (Token, TrainStep)) else first.items
                wrap = Tokens if isinstance(first, (Token, Tokens)) else TrainSteps
                for k in range(0, len(items), self.max_batch):
                    yield wrap(run=first.run, items=tuple(items[k:k + self.max_batch]))
            else:
                yield first
            start = n

    def _emit(self, msg: Message) -> None:
        try:
            self._send(msg)
            self.messages_sent += 1
        except Exception:  # noqa: BLE001 - a dead comm must not break the engine
            log.warning("aigc_lab: could not send %s to the panel", msg.get("type"), exc_info=True)

    def _flush_loop(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                break
            delay = self._last_flush + self.flush_interval - time.perf_counter()
            if delay > 0:
                with self._lock:
                    full = len(self._pending) >= self.max_batch
                if not full:
                    time.sleep(delay)
            self.flush()

    # -- panel -> kernel -------------------------------------------------------------------
    def handle_incoming(self, data: Any) -> Message | None:
        """Handle one message from the panel; return the reply sent (``ack``), or None if ignored.

        This runs in the kernel's comm handler, so nothing may raise out of it: a malformed message
        (wrong types, missing fields, deep nesting, huge strings or numbers, not an object at all) is
        logged in one short line, without the payload or a traceback, and ignored; nothing in it runs.
        """
        try:
            return self._handle_incoming(data)
        except Exception as exc:  # noqa: BLE001 - the last guard of the comm handler; one line, no traceback
            _ignored(f"a message from the panel that could not be handled ({type(exc).__name__})")
            return None

    def _handle_incoming(self, data: Any) -> Message | None:
        try:
            event = from_message(data)
        except ProtocolError as exc:
            _ignored(f"a malformed message from the panel ({exc})")
            return None
        if isinstance(event, (Cancel, History)) and (len(event.id) > MAX_ID or len(event.run or "") > MAX_ID):
            _ignored(f"a {event.type} request from the panel with an id longer than {MAX_ID} characters")
            return None
        if isinstance(event, History):
            return self._replay(event)
        self.live = True  # a cancel also says a panel is listening
        if not isinstance(event, Cancel):
            _ignored(f"an unexpected {event.type} message from the panel")
            return None
        ok = runs.cancel(event.run)
        reply = to_message(Ack(run=event.run, id=event.id, ok=ok,
                               error=None if ok else f"run {event.run!r} is not running"))
        with self._send_lock:
            self._emit(reply)
        return reply

    def _replay(self, request: History) -> Message:
        """Ack the request, then send every recorded run as ordinary messages, in batches."""
        reply = to_message(Ack(run=None, id=request.id, ok=True))
        with self._send_lock:
            # Live before the snapshot: an event published meanwhile is recorded first (the
            # recorder is the bus's first sink), so it comes in the replay, live, or both; the
            # panel drops duplicates.
            self.live = True
            self._flush_locked()
            self._emit(reply)
            self._send_events(self._history.replay())
        return reply

    def close(self) -> None:
        """Flush what is queued, stop the flusher and leave the bus."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._unsubscribe()
        self._wake.set()


def hello() -> Hello:
    return Hello(kernel={"language": "python", "python": platform.python_version(),
                         "aigc_lab": __version__, "pid": os.getpid()})


_bridge: CommBridge | None = None
_comm: Any = None


def _serve_where_addressed(panel_comm: Any, on_msg: Callable[[Any], None]) -> None:
    """Serve the panel's requests on the subshell they were sent to, as plain protocol messages.

    ipykernel 7 routes a frontend's ``comm_msg`` to the subshell under whose request the kernel last
    published on that comm (``_reply_subshell_for``: so that a widget's reply reaches the cell
    waiting for it). This comm publishes from cells on the main shell, so every panel request would
    wait behind the running cell. The kernel never waits for a panel reply, so the subshell the
    request names is the right one. And comm's ``handle_msg`` fires IPython's ``pre_execute`` /
    ``post_execute`` hooks around the callback; a protocol request is not user code, and on a
    subshell those hooks (matplotlib's inline backend closes open figures there) would act on the
    cell running on the main thread. Kernels without these hooks are unaffected.
    """
    if hasattr(panel_comm, "_reply_subshell_for"):
        panel_comm._reply_subshell_for = lambda _data, addressed: addressed
    panel_comm.handle_msg = on_msg


def connect() -> CommBridge:
    """Open the ``aigc_lab`` comm to the panel (idempotent) and start forwarding bus events."""
    global _bridge, _comm
    if _bridge is not None and not _bridge._closed:
        return _bridge
    import comm as comm_lib

    _comm = comm_lib.create_comm(target_name=TARGET_NAME, data=to_message(hello()))
    bridge = CommBridge(lambda msg: _comm.send(data=msg), live=False)

    def on_msg(msg: Any) -> None:
        bridge.handle_incoming(_data_of(msg))

    _comm.on_msg(on_msg)
    _serve_where_addressed(_comm, on_msg)
    _comm.on_close(lambda _msg: bridge.close())
    _bridge = bridge
    return bridge


def disconnect() -> None:
    """Close the comm and stop forwarding."""
    global _bridge, _comm
    if _bridge is not None:
        _bridge.close()
    if _comm is not None:
        try:
            _comm.close()
        except Exception:  # noqa: BLE001
            pass
    _bridge = _comm = None
