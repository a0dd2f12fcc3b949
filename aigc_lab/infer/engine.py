"""The streaming decode engine: ``generate`` returns a ``TokenStream`` fed by a KV-cached decode loop.

Every token is timestamped when it is produced and published on the bus as a ``Token`` event (no I/O,
no JSON in the loop: sinks batch). A run always ends with exactly one ``run.end`` event, whether it
finished, was cancelled (``cancel()``, the panel, or a kernel interrupt) or raised; a consumer is never
left waiting, and an error is re-raised to whoever iterates or waits on the stream.

Two ways to run: in the calling thread (iteration drives the loop; a notebook cell streams while it
runs) or ``background=True`` (a worker thread; iteration follows it; ``cancel()`` from any thread).
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from .. import runs
from ..bus import EventBus
from ..bus import bus as default_bus
from ..errors import GenerationConfigError
from ..events import RunEnd, RunMetrics, RunStart, Token
from .detok import IncrementalDetokenizer
from .metrics import peak_memory_mb, summarize


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings. ``temperature=0`` means greedy; ``seed`` makes sampling reproducible."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            problems.append("max_new_tokens must be a positive integer")
        if self.temperature < 0:
            problems.append("temperature must be >= 0 (0 = greedy)")
        if self.top_k < 0:
            problems.append("top_k must be >= 0 (0 = off)")
        if not 0 < self.top_p <= 1:
            problems.append("top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            problems.append("repetition_penalty must be > 0 (1 = off)")
        if problems:
            raise GenerationConfigError("; ".join(problems))


class TokenStream:
    """Tokens of one generation as they are produced. Iterate it, or read ``.text`` / ``.metrics``."""

    def __init__(self, handle: Any, prompt: str, params: GenerationParams, *, event_bus: EventBus,
                 background: bool) -> None:
        self.handle = handle
        self.prompt = prompt
        self.params = params
        self.run = runs.new_run_id("generate")
        self.tokens: list[Token] = []
        self.status = "running"
        self.error: BaseException | None = None
        self._metrics: RunMetrics | None = None
        self._bus = event_bus
        self._cond = threading.Condition()
        self._done = False
        self._cancel_flag = runs.register(self.run)
        self._steps = self._decode()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._drain, name=f"aigc-lab-{self.run}", daemon=True)
            self._thread.start()

    # -- consumer side -------------------------------------------------------------------
    def __iter__(self) -> Iterator[Token]:
        i = 0
        while True:
            with self._cond:
                while self._thread is not None and i >= len(self.tokens) and not self._done:
                    self._cond.wait()
                if i < len(self.tokens):
                    token = self.tokens[i]
                    i += 1
                    yield token
                    continue
                if self._done:
                    break
            next(self._steps, None)  # calling-thread mode: produce the next token here
        if self.error is not None:
            raise self.error

    def wait(self, timeout: float | None = None) -> TokenStream:
        """Run (or wait for) the generation to the end; re-raise its error, if any."""
        if self._thread is None:
            for _ in self._steps:
                pass
        else:
            with self._cond:
                self._cond.wait_for(lambda: self._done, timeout)
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

    # -- producer side -------------------------------------------------------------------
    def _drain(self) -> None:
        try:
            for _ in self._steps:
                pass
        except BaseException:  # noqa: BLE001 - stored in self.error and re-raised to consumers
            pass

    def _emit(self, token: Token) -> None:
        with self._cond:
            self.tokens.append(token)
            self._cond.notify_all()
        self._bus.publish(token)

    def _decode(self) -> Iterator[None]:
        import torch

        h, p = self.handle, self.params
        model, tok = h.model, h.tokenizer
        t0 = time.perf_counter()
        config = {"prompt": self.prompt, **asdict(p), "stop": list(p.stop)}
        self._bus.publish(RunStart(run=self.run, kind="generate", model=h.info(), config=config,
                                   t0=time.time() * 1000.0))
        times: list[float] = []
        status, error = "ok", None
        try:
            device = next(model.parameters()).device
            enc = tok(self.prompt, return_tensors="pt")
            ids = enc["input_ids"].to(device)
            eos = tok.eos_token_id
            gen = torch.Generator(device="cpu").manual_seed(p.seed) if p.seed is not None else None
            history = ids[0].tolist()
            with torch.inference_mode():
                if h.kind == "seq2seq":
                    mask = enc["attention_mask"].to(device)
                    encoded = model.get_encoder()(input_ids=ids, attention_mask=mask)
                    detok = IncrementalDetokenizer(tok)
                    start = torch.tensor([[model.config.decoder_start_token_id]], device=device)

                    def step(inp, past):
                        return model(encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=inp,
                                     past_key_values=past, use_cache=True)

                    out = step(start, None)
                    history = []
                else:
                    detok = IncrementalDetokenizer(tok, history)

                    def step(inp, past):
                        return model(input_ids=inp, past_key_values=past, use_cache=True)

                    out = step(ids, None)
                generated = ""
                for i in range(p.max_new_tokens):
                    if self._cancel_flag.is_set():
                        status = "cancelled"
                        break
                    next_id = _pick(out.logits[:, -1, :], history, p, gen)
                    piece = detok.push(next_id)
                    ms = (time.perf_counter() - t0) * 1000.0
                    times.append(ms)
                    self._emit(Token(run=self.run, i=i, id=next_id, text=piece, ms=ms))
                    yield None
                    history.append(next_id)
                    generated += piece
                    if next_id == eos or (p.stop and any(s in generated for s in p.stop)):
                        break
                    if i + 1 < p.max_new_tokens:
                        out = step(torch.tensor([[next_id]], device=device), out.past_key_values)
                tail = detok.flush()
                if tail:  # an incomplete character at the very end: deliver it rather than lose it
                    self._emit(Token(run=self.run, i=len(self.tokens), id=None, text=tail,
                                     ms=(time.perf_counter() - t0) * 1000.0))
        except (KeyboardInterrupt, GeneratorExit) as exc:
            status = "cancelled"
            if isinstance(exc, KeyboardInterrupt):
                self.error = exc
            raise
        except Exception as exc:
            status, error = "error", f"{type(exc).__name__}: {exc}"
            self.error = exc
            raise
        finally:
            runs.unregister(self.run)
            self._metrics = summarize(times, peak_mem_mb=peak_memory_mb())
            self.status = status
            self._bus.publish(RunEnd(run=self.run, status=status, metrics=self._metrics, error=error))
            with self._cond:
                self._done = True
                self._cond.notify_all()


def _pick(logits: Any, history: list[int], p: GenerationParams, gen: Any) -> int:
    """Choose the next token id from the last position's logits (greedy, or sampled with the filters)."""
    import torch

    logits = logits[0].float()
    if p.repetition_penalty != 1.0 and history:
        idx = torch.tensor(sorted(set(history)), device=logits.device)
        vals = logits[idx]
        logits[idx] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if p.temperature == 0:
        return int(torch.argmax(logits))
    logits = logits / p.temperature
    if p.top_k:
        kth = torch.topk(logits, min(p.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) > p.top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1).cpu()
    return int(torch.multinomial(probs, 1, generator=gen))


def generate(model: Any, prompt: str, *, background: bool = False, event_bus: EventBus | None = None,
             **params: Any) -> TokenStream:
    """Stream a continuation of ``prompt`` from ``model`` (a ``ModelHandle`` or a name to load).

    Parameters: ``max_new_tokens``, ``temperature`` (0 = greedy), ``top_k``, ``top_p``,
    ``repetition_penalty``, ``stop`` (strings), ``seed``. With ``background=True`` it runs on a
    worker thread and returns at once; otherwise tokens are produced as you iterate (or on ``.text``).
    """
    from ..models import ModelHandle, load

    if isinstance(params.get("stop"), str):
        params["stop"] = (params["stop"],)
    elif "stop" in params:
        params["stop"] = tuple(params["stop"])
    try:
        gp = GenerationParams(**params)
    except TypeError as exc:
        raise GenerationConfigError(f"{exc}; see help(aigc_lab.generate) for the parameters") from exc
    if not isinstance(prompt, str):
        raise GenerationConfigError("prompt must be a string")
    handle = model if isinstance(model, ModelHandle) else load(model)
    return TokenStream(handle, prompt, gp, event_bus=event_bus or default_bus, background=background)
