"""``generate`` and ``TokenStream``: the streaming engine's public face.

Every token is timestamped when it is produced and published on the bus as a ``Token`` event (no I/O,
no JSON in the loop: sinks batch). A run always ends with exactly one ``run.end`` event, whether it
finished, was cancelled (``cancel()``, the panel, or a kernel interrupt) or raised; a consumer is never
left waiting, and an error is re-raised to whoever iterates or waits on the stream.

Two ways to run: in the calling thread (iteration drives the loop; a notebook cell streams while it
runs; a kernel interrupt lands between tokens) or ``background=True`` (a worker thread; iteration
follows it; ``cancel()`` from any thread stops it within one token). A list of prompts decodes as
one batch and gives one stream (and one run) per prompt.
"""

from __future__ import annotations

import atexit
import html
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from typing import Any

from .. import runs
from ..bus import EventBus
from ..bus import bus as default_bus
from ..errors import GenerationConfigError
from ..events import RunEnd, RunMetrics, RunStart, Token
from .backends import Plan, plan
from .decode import decode
from .metrics import peak_memory_mb, summarize
from .params import GenerationParams
from .stepper import DecodeRequest

_END = object()


_workers: weakref.WeakKeyDictionary[threading.Thread, list[str]] = weakref.WeakKeyDictionary()  # -> its runs


@atexit.register
def _join_workers() -> None:
    """Let background generations that are winding down finish before the interpreter does: a daemon thread
    still inside torch's C++ code when Python finalizes is killed by a forced unwind, which aborts the
    process ("terminate called without an active exception"). Runs still decoding are cancelled first."""
    for thread, run_ids in list(_workers.items()):
        if thread.is_alive():
            for run in run_ids:
                runs.cancel(run)
            thread.join(timeout=2.0)


class _Driver:
    """Advances one decode loop for its streams: on demand in the consumer's thread, or on a worker thread."""

    def __init__(self, steps: Iterator[None], background: bool, run_ids: list[str]) -> None:
        self._steps = steps
        self._lock = threading.Lock()  # one thread advances the loop at a time
        self.thread: threading.Thread | None = None
        if background:
            self.thread = threading.Thread(target=self._drain, name=f"aigc-lab-{run_ids[0]}", daemon=True)
            _workers[self.thread] = run_ids
            self.thread.start()

    def advance(self) -> bool:
        """One decode step in the calling thread; False when the loop has ended."""
        with self._lock:
            return next(self._steps, _END) is not _END

    def run_to_end(self) -> None:
        while self.advance():
            pass

    def close(self) -> None:
        with self._lock:
            self._steps.close()

    def _drain(self) -> None:
        try:
            self.run_to_end()
        except BaseException:  # noqa: BLE001 - stored on the streams and re-raised to their consumers
            pass


class TokenStream:
    """Tokens of one generation as they are produced. Iterate it, or read ``.text`` / ``.metrics``."""

    def __init__(self, handle: Any, prompt: str, params: GenerationParams, *, event_bus: EventBus,
                 chat: dict[str, Any] | None = None, plan: Plan | None = None) -> None:
        self.handle = handle
        self.prompt = prompt
        self.params = params
        self.plan = plan  # the layers and stepper that run it (infer/backends.py), recorded in run.start
        self.speculation: dict[str, Any] | None = None  # speculative decoding's counts (infer/speculative.py)
        self.chat = chat  # al.chat: the conversation's turns and template, recorded in run.start for the panel
        self.run = runs.new_run_id("generate")
        self.tokens: list[Token] = []
        self.status = "running"
        self.error: BaseException | None = None
        self._metrics: RunMetrics | None = None
        self._bus = event_bus
        self._cond = threading.Condition()  # iterating consumers wait on it: woken once per token
        self._done = False
        self._finished = threading.Event()  # wait() waits on this alone: not woken by every token
        self._cancel_flag = runs.register(self.run)
        self._driver: _Driver | None = None

    # -- consumer side -------------------------------------------------------------------
    def __iter__(self) -> Iterator[Token]:
        assert self._driver is not None
        background = self._driver.thread is not None
        i = 0
        while True:
            with self._cond:
                while background and i >= len(self.tokens) and not self._done:
                    self._cond.wait()
                if i < len(self.tokens):
                    token = self.tokens[i]
                    i += 1
                    yield token
                    continue
                if self._done:
                    break
            if not self._driver.advance() and not self._done:  # calling-thread mode: produce tokens here
                break
        if self.error is not None:
            raise self.error

    def wait(self, timeout: float | None = None) -> TokenStream:
        """Run (or wait for) the generation to the end; re-raise its error, if any."""
        assert self._driver is not None
        if self._driver.thread is None:
            while not self._done and self._driver.advance():
                pass
        else:
            # not the per-token condition: a waiter woken at every token would compete with the decode
            # thread for the GIL and a core, for nothing
            self._finished.wait(timeout)
        if self.error is not None:
            raise self.error
        return self

    def cancel(self) -> None:
        """Stop after the current token (any thread); the run ends with status ``cancelled``."""
        self._cancel_flag.set()

    @property
    def done(self) -> bool:
        return self._done

    @property
    def ids(self) -> list[int]:
        """The generated token ids so far."""
        return [t.id for t in self.tokens if t.id is not None]

    @property
    def text(self) -> str:
        """The generated text (waits for the end)."""
        self.wait()
        return "".join(t.text for t in self.tokens)

    @property
    def metrics(self) -> RunMetrics:
        """TTFT, tokens/s, inter-token latency percentiles, peak memory (waits for the end)."""
        self.wait()
        assert self._metrics is not None
        return self._metrics

    def _repr_html_(self) -> str:
        # a static summary that stays readable in a saved notebook with no kernel
        if not self._done:
            return f"<pre>TokenStream {html.escape(self.run)}: running, {len(self.tokens)} tokens so far</pre>"
        m = self._metrics or RunMetrics()
        ttft = f"{m.ttft_ms:.1f} ms" if m.ttft_ms is not None else "-"
        rate = f"{m.tok_s:.1f} tok/s" if m.tok_s is not None else "-"
        text = html.escape("".join(t.text for t in self.tokens))
        return (f"<div><b>{html.escape(self.handle.name)}</b> · {self.status} · {m.tokens} tokens · "
                f"TTFT {ttft} · {rate}<pre style='white-space:pre-wrap'>{text}</pre></div>")

    def __repr__(self) -> str:
        return f"TokenStream(run={self.run!r}, status={self.status!r}, tokens={len(self.tokens)})"

    # -- producer side (called by the decode loop) ----------------------------------------
    def _start(self, t0: float) -> None:
        config = {"prompt": self.prompt, **asdict(self.params), "stop": list(self.params.stop),
                  "stop_token_ids": list(self.params.stop_token_ids)}
        if self.plan is not None:
            config.update(self.plan.record())
        if self.speculation is not None:
            config["draft"] = self.speculation["draft"]
        if self.chat is not None:
            config["chat"] = self.chat
        self._bus.publish(RunStart(run=self.run, kind="generate", model=self.handle.info(), config=config,
                                   t0=time.time() * 1000.0))

    def _emit(self, token: Token) -> None:
        with self._cond:
            self.tokens.append(token)
            self._cond.notify_all()
        self._bus.publish(token)

    def _finish(self, status: str, tail: str, t0: float, exc: BaseException | None = None) -> None:
        if tail:  # an incomplete character at the very end: deliver it rather than lose it
            self._emit(Token(run=self.run, i=len(self.tokens), id=None, text=tail,
                             ms=(time.perf_counter() - t0) * 1000.0))
        runs.unregister(self.run)
        # the held-back tail (id None) is text, not a generated token: it does not count in the metrics
        self._metrics = summarize([t.ms for t in self.tokens if t.id is not None], peak_mem_mb=peak_memory_mb())
        spec = self.speculation
        if spec is not None and spec["target_steps"]:
            self._metrics = replace(self._metrics, tokens_per_step=self._metrics.tokens / spec["target_steps"],
                                    draft_acceptance=spec["accepted"] / spec["proposed"] if spec["proposed"] else None)
        self.status = status
        self.error = exc
        error = f"{type(exc).__name__}: {exc}" if exc is not None and status == "error" else None
        self._bus.publish(RunEnd(run=self.run, status=status, metrics=self._metrics, error=error))
        with self._cond:
            self._done = True
            self._cond.notify_all()
        self._finished.set()


def generate(model: Any, prompt: str | Sequence[str], *, background: bool = False,
             event_bus: EventBus | None = None, **params: Any) -> Any:
    """Stream a continuation of ``prompt`` from ``model`` (a ``ModelHandle`` or a name to load).

    Returns a ``TokenStream``; for a list of prompts, a list of streams decoded together as one batch.
    Parameters: ``max_new_tokens``, ``temperature`` (0 = greedy), ``top_k``, ``top_p``,
    ``repetition_penalty``, ``stop`` (strings), ``stop_token_ids`` (ids that end it besides the tokenizer's end
    id and every id of the model's ``generation_config.eos_token_id``), ``seed``, ``ignore_eos``, ``logprobs``
    (k: each token's log-probability and its k most likely alternatives on ``Token.logprob`` / ``.top``, shown
    by the panel's token inspector; None = off), ``cpu_kernel``
    (single-prompt CPU decoding on the engine's C++ kernel: None = when built, True = required, False = never;
    ``al.infer.explain`` shows what runs and why), ``stepper`` (a registry entry's name, to force one), ``draft``
    (speculative decoding: a smaller model sharing the tokenizer, or ``"prompt"`` for prompt lookup; greedy output
    identical to the target alone, sampling with the target's distribution; ``num_draft_tokens``: k or "auto").
    With
    ``background=True`` it runs on a worker thread and returns at once; otherwise tokens are produced as
    you iterate (or on ``.text`` / ``.metrics`` / ``.wait()``).
    """
    return start_generation(model, prompt, background=background, event_bus=event_bus, **params)


def _params(params: dict[str, Any]) -> GenerationParams:
    if isinstance(params.get("stop"), str):
        params["stop"] = (params["stop"],)
    elif "stop" in params:
        params["stop"] = tuple(params["stop"])
    if "stop_token_ids" in params:
        ids = params["stop_token_ids"]
        params["stop_token_ids"] = (ids,) if isinstance(ids, int) else tuple(ids)
    try:
        return GenerationParams(**params)
    except TypeError as exc:
        raise GenerationConfigError(f"{exc}; see help(aigc_lab.generate) for the parameters") from exc


def _prompts(prompt: str | Sequence[str]) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or not all(isinstance(x, str) for x in prompts):
        raise GenerationConfigError("prompt must be a string or a non-empty list of strings")
    return prompts


def _handle(model: Any) -> Any:
    from ..models import ModelHandle, load

    return model if isinstance(model, ModelHandle) else load(model)


def explain(model: Any, prompt: str | Sequence[str] = "", **params: Any) -> Plan:
    """How ``generate(model, prompt, **params)`` would run, printed: the layer backend and the stepper chosen,
    and why each one ranked before them does not apply. Nothing is generated."""
    gp = _params(params)
    batch = 1 if isinstance(prompt, str) else len(_prompts(prompt))
    chosen = plan(_handle(model), DecodeRequest(batch=batch, cpu_kernel=gp.cpu_kernel, stepper=gp.stepper))
    print(chosen)
    return chosen


def start_generation(model: Any, prompt: str | Sequence[str], *, background: bool = False,
                     event_bus: EventBus | None = None, chats: Sequence[dict[str, Any]] | None = None,
                     draft: Any = None, **params: Any) -> Any:
    """``generate``, plus what ``al.chat`` records of each prompt's conversation (``chats``, one per prompt)."""
    from .speculative import draft_of, rewindable, speculative_decode

    gp = _params(params)
    batch = not isinstance(prompt, str)
    prompts = _prompts(prompt)
    handle = _handle(model)
    chosen = plan(handle, DecodeRequest(batch=len(prompts), cpu_kernel=gp.cpu_kernel, stepper=gp.stepper))
    gp = replace(gp, cpu_kernel=chosen.layers.name.startswith("kernel"))
    bus = event_bus or default_bus
    if chats is not None and len(chats) != len(prompts):
        raise GenerationConfigError("one chat record per prompt")
    streams = [TokenStream(handle, x, gp, event_bus=bus, chat=None if chats is None else chats[i], plan=chosen)
               for i, x in enumerate(prompts)]
    if draft is None:
        loop = decode(streams, handle, chosen)
    else:
        if batch or handle.kind != "causal" or not rewindable(chosen.stepper.name):
            raise GenerationConfigError(f"speculative decoding (draft=...) runs one prompt of a causal model whose "
                                        f"cache can rewind; this generation runs on {chosen.stepper.name!r}")
        source = draft_of(draft, handle, gp.cpu_kernel)
        streams[0].speculation = {"draft": source.label, "proposed": 0, "accepted": 0, "target_steps": 0}
        loop = speculative_decode(streams[0], handle, chosen, source)
    driver = _Driver(loop, background, [s.run for s in streams])
    for s in streams:
        s._driver = driver
    return streams if batch else streams[0]
