"""Publish/subscribe of engine events, and the ``Recorder`` sink that keeps run history.

Engines call ``publish`` from any thread, once per event (including once per token), so publishing is
cheap: no I/O, no JSON. A sink that raises is logged and kept out of the engine's way.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .events import (
    Checkpoint,
    Event,
    RunEnd,
    RunStart,
    Token,
    Tokens,
    TrainEval,
    TrainStep,
    TrainSteps,
)

log = logging.getLogger("aigc_lab")
Sink = Callable[[Event], None]


class EventBus:
    """Fan events out to subscribed sinks, synchronously, in publish order per thread."""

    def __init__(self) -> None:
        self._sinks: tuple[Sink, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, sink: Sink) -> Callable[[], None]:
        """Add ``sink``; return a function that removes it again."""
        with self._lock:
            self._sinks = (*self._sinks, sink)

        def unsubscribe() -> None:
            with self._lock:
                self._sinks = tuple(s for s in self._sinks if s is not sink)

        return unsubscribe

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every sink; a failing sink is logged, never propagated."""
        for sink in self._sinks:  # tuple snapshot: subscribe/unsubscribe never races the loop
            try:
                sink(event)
            except Exception:  # noqa: BLE001 - a broken sink must not break generation
                log.exception("aigc_lab: sink %r failed on %s", sink, event.type)


@dataclass
class RunRecord:
    """Everything recorded about one run, kept after it ends (or is cancelled)."""

    start: RunStart | None = None
    tokens: list[Token] = field(default_factory=list)
    end: RunEnd | None = None
    steps: list[TrainStep] = field(default_factory=list)
    evals: list[TrainEval] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens)

    @property
    def status(self) -> str:
        return self.end.status if self.end else "running"


class Recorder:
    """Sink that keeps the last ``max_runs`` runs so history survives a cancel or a closed panel."""

    def __init__(self, max_runs: int = 200) -> None:
        self.max_runs = max_runs
        self.runs: OrderedDict[str, RunRecord] = OrderedDict()
        self._lock = threading.Lock()

    def _record(self, run: str) -> RunRecord:
        rec = self.runs.get(run)
        if rec is None:
            rec = self.runs[run] = RunRecord()
            while len(self.runs) > self.max_runs:
                self.runs.popitem(last=False)
        return rec

    def __call__(self, event: Event) -> None:
        run = event.run
        if run is None:
            return
        with self._lock:
            rec = self._record(run)
            if isinstance(event, Token):
                rec.tokens.append(event)
            elif isinstance(event, Tokens):
                rec.tokens.extend(event.items)
            elif isinstance(event, RunStart):
                rec.start = event
            elif isinstance(event, RunEnd):
                rec.end = event
            elif isinstance(event, TrainStep):
                rec.steps.append(event)
            elif isinstance(event, TrainSteps):
                rec.steps.extend(event.items)
            elif isinstance(event, TrainEval):
                rec.evals.append(event)
            elif isinstance(event, Checkpoint):
                rec.checkpoints.append(event)

    def __getitem__(self, run: str) -> RunRecord:
        return self.runs[run]

    def replay(self) -> list[Event]:
        """Every recorded event, run by run in start order (for a late panel): tokens as one batch per run,
        steps in step order with each stretch of steps between evals and checkpoints as one batch."""
        out: list[Event] = []
        with self._lock:
            records = list(self.runs.items())
        for run, rec in records:
            if rec.start is not None:
                out.append(rec.start)
            if rec.tokens:
                out.append(Tokens(run=run, items=tuple(rec.tokens)))
            batch: list[TrainStep] = []
            for event in sorted([*rec.steps, *rec.evals, *rec.checkpoints], key=lambda e: e.step):
                if isinstance(event, TrainStep):
                    batch.append(event)
                    continue
                if batch:
                    out.append(TrainSteps(run=run, items=tuple(batch)))
                    batch = []
                out.append(event)
            if batch:
                out.append(TrainSteps(run=run, items=tuple(batch)))
            if rec.end is not None:
                out.append(rec.end)
        return out

    def last(self) -> RunRecord | None:
        """The most recently started run, if any."""
        with self._lock:
            return next(reversed(self.runs.values()), None)


bus = EventBus()
"""The process-wide bus every engine publishes on by default."""

recorder = Recorder()
"""The process-wide run history."""

bus.subscribe(recorder)
