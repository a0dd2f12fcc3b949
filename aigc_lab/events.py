"""Typed events and the one Python definition of the wire format (protocol v1, docs/protocol.md).

Engines publish these dataclasses on the bus; sinks turn them into JSON-ready dicts with
``to_message``. ``from_message`` is the strict inverse used for anything arriving from outside: it
rejects unknown types, missing or ill-typed fields and newer protocol versions with ``ProtocolError``,
whatever the input (deep nesting, huge strings or numbers, not an object): its messages describe bad
values briefly and never hold the repr of a whole payload.
``Token`` is the per-token bus event; on the wire tokens travel in batches (``Tokens``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .errors import ProtocolError

PROTOCOL_VERSION = 1

RunKind = Literal["generate", "train", "bench"]
RunStatus = Literal["ok", "cancelled", "error"]
RUN_KINDS: tuple[str, ...] = ("generate", "train", "bench")
RUN_STATUSES: tuple[str, ...] = ("ok", "cancelled", "error")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What exactly ran: enough to tell two rows of a comparison apart."""

    name: str
    params: int
    dtype: str
    quant: str | None
    device: str


@dataclass(frozen=True, slots=True)
class RunMetrics:
    """Speed figures of a finished run; ``None`` where a figure was not measured."""

    ttft_ms: float | None = None
    tokens: int = 0
    tok_s: float | None = None
    itl_p50_ms: float | None = None
    itl_p95_ms: float | None = None
    peak_mem_mb: float | None = None
    # speculative decoding only (sent only then: additive in v1): share of the draft's proposals the target
    # accepted, and generated tokens per target forward
    draft_acceptance: float | None = None
    tokens_per_step: float | None = None


@dataclass(frozen=True, slots=True)
class Hello:
    kernel: dict[str, Any]
    version: int = PROTOCOL_VERSION
    run: None = None
    type: ClassVar[str] = "hello"


@dataclass(frozen=True, slots=True)
class RunStart:
    run: str
    kind: str
    model: ModelInfo
    config: dict[str, Any]
    t0: float
    type: ClassVar[str] = "run.start"


@dataclass(frozen=True, slots=True)
class TopToken:
    """One of the most likely tokens at a position (``generate(..., logprobs=k)``): id, piece, log-probability."""

    id: int
    text: str
    logprob: float


@dataclass(frozen=True, slots=True)
class Token:
    """One generated token: index in the run, token id, decoded piece, ms since run start; with
    ``logprobs`` on, its log-probability under the model and the ``top`` alternatives (most likely first)."""

    run: str
    i: int
    id: int | None
    text: str
    ms: float
    logprob: float | None = None
    top: tuple[TopToken, ...] = ()
    draft: bool = False  # speculative decoding: proposed by the draft and accepted by the target
    type: ClassVar[str] = "token"


@dataclass(frozen=True, slots=True)
class Tokens:
    """A batch of tokens as sent on the wire (sinks batch ``Token`` events into these)."""

    run: str
    items: tuple[Token, ...]
    type: ClassVar[str] = "tokens"


@dataclass(frozen=True, slots=True)
class RunEnd:
    run: str
    status: str
    metrics: RunMetrics = field(default_factory=RunMetrics)
    error: str | None = None
    type: ClassVar[str] = "run.end"


@dataclass(frozen=True, slots=True)
class TrainStep:
    run: str
    step: int
    loss: float
    lr: float
    tok_s: float | None = None
    epoch: float | None = None
    eta_s: float | None = None
    type: ClassVar[str] = "train.step"


@dataclass(frozen=True, slots=True)
class TrainSteps:
    """A batch of one run's training steps as sent on the wire (the comm sink batches ``TrainStep``
    events into these, as it batches tokens: one message per step floods IOPub at fast step rates)."""

    run: str
    items: tuple[TrainStep, ...]
    type: ClassVar[str] = "train.steps"


@dataclass(frozen=True, slots=True)
class TrainEval:
    run: str
    step: int
    val_loss: float
    ppl: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    type: ClassVar[str] = "train.eval"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    run: str
    step: int
    path: str
    type: ClassVar[str] = "checkpoint"


@dataclass(frozen=True, slots=True)
class DataStep:
    """One data-preparation step: how many rows went in and out, and what happened to the rest."""

    run: str
    step: str
    rows_in: int
    rows_out: int
    changed: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    type: ClassVar[str] = "data.step"


@dataclass(frozen=True, slots=True)
class Cancel:
    """Panel -> kernel: stop ``run``; ``id`` is the request id echoed in the ``Ack``."""

    run: str
    id: str
    type: ClassVar[str] = "cancel"


@dataclass(frozen=True, slots=True)
class History:
    """Panel -> kernel: replay the recorded runs (a panel opened, or reloaded, after runs started)."""

    id: str
    run: None = None
    type: ClassVar[str] = "history"


@dataclass(frozen=True, slots=True)
class Ack:
    run: str | None
    id: str
    ok: bool
    error: str | None = None
    type: ClassVar[str] = "ack"


RunEvent = RunStart | Token | Tokens | RunEnd | TrainStep | TrainSteps | TrainEval | Checkpoint | DataStep
BATCHABLE: tuple[str, ...] = tuple(c.type for c in RunEvent.__args__ if c is not Token)  # Token goes as "tokens"
"""The message types a ``batch`` may hold: run events (``hello`` and ``ack`` travel alone)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Several run events in one comm message, in publish order (the comm sink's): the browser pays about a
    millisecond per comm message whatever its size, so a flood of small messages (steps, evals, short runs)
    is sent as a few batches."""

    messages: tuple[RunEvent, ...]
    run: None = None
    type: ClassVar[str] = "batch"


Event = Hello | RunEvent | Batch | Cancel | History | Ack
Message = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# Encoding


def _token_item(t: Token) -> Message:
    item: Message = {"i": t.i, "id": t.id, "text": t.text, "ms": t.ms}
    if t.logprob is not None:  # optional fields (additive in v1): only runs with logprobs on carry them
        item["logprob"] = t.logprob
        item["top"] = [{"id": a.id, "text": a.text, "logprob": a.logprob} for a in t.top]
    if t.draft:  # optional (additive in v1): only speculative runs mark the draft's accepted tokens
        item["draft"] = True
    return item


_SPECULATIVE_METRICS = ("draft_acceptance", "tokens_per_step")


def to_message(event: Event) -> Message:
    """Encode an event as a protocol-v1 message dict (JSON-ready). ``Token`` becomes a 1-item batch."""
    if isinstance(event, Token):
        event = Tokens(run=event.run, items=(event,))
    msg: Message = {"v": PROTOCOL_VERSION, "type": event.type, "run": event.run}
    if isinstance(event, Batch):
        msg["messages"] = [to_message(e) for e in event.messages]
        return msg
    if isinstance(event, Tokens):
        msg["items"] = [_token_item(t) for t in event.items]
        return msg
    if isinstance(event, TrainSteps):
        msg["items"] = [{k: getattr(s, k) for k in _STEP_FIELDS} for s in event.items]
        return msg
    for name in event.__dataclass_fields__:
        if name in ("run", "type"):
            continue
        value = getattr(event, name)
        if isinstance(value, (ModelInfo, RunMetrics)):
            value = {k: getattr(value, k) for k in value.__dataclass_fields__
                     if k not in _SPECULATIVE_METRICS or getattr(value, k) is not None}
        msg[name] = value
    return msg


# ---------------------------------------------------------------------------------------------
# Strict decoding

Check = Callable[[Any], bool]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _opt(check: Check) -> Check:
    return lambda x: x is None or check(x)


def _one_of(*values: str) -> Check:
    return lambda x: x in values


def _is_str(x: Any) -> bool:
    return isinstance(x, str)


def _is_obj(x: Any) -> bool:
    return isinstance(x, dict)


_MODEL_FIELDS: dict[str, Check] = {
    "name": _is_str, "params": _is_int, "dtype": _is_str, "quant": _opt(_is_str), "device": _is_str,
}
_METRIC_FIELDS: dict[str, Check] = {
    "ttft_ms": _opt(_is_num), "tokens": _is_int, "tok_s": _opt(_is_num),
    "itl_p50_ms": _opt(_is_num), "itl_p95_ms": _opt(_is_num), "peak_mem_mb": _opt(_is_num),
}
CHAT_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
_CHAT_FIELDS: dict[str, Check] = {"messages": lambda x: isinstance(x, list), "template": _is_str}
_TURN_FIELDS: dict[str, Check] = {"role": _one_of(*CHAT_ROLES), "content": _is_str}
_ITEM_FIELDS: dict[str, Check] = {"i": _is_int, "id": _opt(_is_int), "text": _is_str, "ms": _is_num}
_TOP_FIELDS: dict[str, Check] = {"id": _is_int, "text": _is_str, "logprob": _is_num}
_STEP_FIELDS: dict[str, Check] = {"step": _is_int, "loss": _is_num, "lr": _is_num, "tok_s": _opt(_is_num),
                                  "epoch": _opt(_is_num), "eta_s": _opt(_is_num)}

# type -> (run check, field checks)
_SPECS: dict[str, tuple[Check, dict[str, Check]]] = {
    "hello": (lambda r: r is None, {"version": _is_int, "kernel": _is_obj}),
    "run.start": (_is_str, {"kind": _one_of(*RUN_KINDS), "model": _is_obj, "config": _is_obj, "t0": _is_num}),
    "tokens": (_is_str, {"items": lambda x: isinstance(x, list)}),
    "run.end": (_is_str, {"status": _one_of(*RUN_STATUSES), "metrics": _is_obj, "error": _opt(_is_str)}),
    "train.step": (_is_str, _STEP_FIELDS),
    "train.steps": (_is_str, {"items": lambda x: isinstance(x, list)}),
    "train.eval": (_is_str, {"step": _is_int, "val_loss": _is_num, "ppl": _opt(_is_num), "metrics": _is_obj}),
    "checkpoint": (_is_str, {"step": _is_int, "path": _is_str}),
    "data.step": (_is_str, {"step": _is_str, "rows_in": _is_int, "rows_out": _is_int, "changed": _is_int,
                            "detail": _is_obj}),
    "cancel": (_is_str, {"id": _is_str}),
    "history": (lambda r: r is None, {"id": _is_str}),
    "ack": (_opt(_is_str), {"id": _is_str, "ok": lambda x: isinstance(x, bool), "error": _opt(_is_str)}),
    "batch": (lambda r: r is None, {"messages": lambda x: isinstance(x, list)}),
}


_BRIEF = 40  # characters of a bad string (and digits of a bad integer) quoted in an error


def _brief(value: Any) -> str:
    """A short description of any value for an error message: bounded in size, never recursive.

    A repr could be megabytes long (a huge string), fail (a 10,000-level nesting, an integer too long
    to print), or span lines; error messages about inbound messages end up in a log line.
    """
    if isinstance(value, str):
        return repr(value[:_BRIEF]) + (f"... ({len(value)} characters)" if len(value) > _BRIEF else "")
    if isinstance(value, (bool, float)) or value is None:
        return repr(value)
    if isinstance(value, int):
        return repr(value) if abs(value) < 10**_BRIEF else f"an integer of {value.bit_length()} bits"
    if isinstance(value, list):
        return f"an array of {len(value)} item(s)"
    if isinstance(value, dict):
        return f"an object of {len(value)} field(s)"
    return f"a {type(value).__name__}"


def _check_fields(obj: dict[str, Any], spec: dict[str, Check], where: str) -> None:
    for name, check in spec.items():
        if name not in obj:
            raise ProtocolError(f"{where}: missing field {name!r}")
        if not check(obj[name]):
            raise ProtocolError(f"{where}: field {name!r} has an invalid value {_brief(obj[name])}")


def _draft_field(item: dict[str, Any], n: int) -> dict[str, Any]:
    """A token item's optional ``draft`` flag (speculative decoding), validated."""
    if "draft" not in item:
        return {}
    if not isinstance(item["draft"], bool):
        raise ProtocolError(f"tokens.items[{n}]: 'draft' must be true or false")
    return {"draft": item["draft"]}


def _objects(items: list[Any], kind: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(index, item)`` for each item of a batch message, each required to be an object."""
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise ProtocolError(f"{kind}.items[{n}] must be an object")
        yield n, item


def _chat_config(config: dict[str, Any]) -> None:
    """``run.start.config.chat`` (optional, additive in v1: runs of ``al.chat``), validated when present."""
    if "chat" not in config:
        return
    chat = config["chat"]
    if not isinstance(chat, dict):
        raise ProtocolError("run.start.config.chat must be an object {messages: [{role, content}, ...], template}")
    _check_fields(chat, _CHAT_FIELDS, "run.start.config.chat")
    for n, turn in enumerate(chat["messages"]):
        where = f"run.start.config.chat.messages[{n}]"
        if not isinstance(turn, dict):
            raise ProtocolError(f"{where} must be an object {{role, content}}")
        _check_fields(turn, _TURN_FIELDS, where)


def _speculative_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """``run.end.metrics``' optional speculative-decoding figures (numbers or null), validated."""
    for k in _SPECULATIVE_METRICS:
        if k in metrics and not _opt(_is_num)(metrics[k]):
            raise ProtocolError(f"run.end.metrics: '{k}' must be a number or null")
    return {k: metrics[k] for k in _SPECULATIVE_METRICS if k in metrics}


def _logprob_fields(item: dict[str, Any], n: int) -> dict[str, Any]:
    """A token item's optional ``logprob`` and ``top`` (both or neither), validated."""
    if "logprob" not in item and "top" not in item:
        return {}
    where = f"tokens.items[{n}]"
    if not _is_num(item.get("logprob")) or not isinstance(item.get("top"), list):
        raise ProtocolError(f"{where}: 'logprob' (a number) and 'top' (an array) come together")
    top = []
    for m, alt in enumerate(item["top"]):
        if not isinstance(alt, dict):
            raise ProtocolError(f"{where}.top[{m}] must be an object")
        _check_fields(alt, _TOP_FIELDS, f"{where}.top[{m}]")
        top.append(TopToken(id=alt["id"], text=alt["text"], logprob=alt["logprob"]))
    return {"logprob": item["logprob"], "top": tuple(top)}


def _batched(n: int, item: Any) -> RunEvent:
    """Message ``n`` of a batch, decoded: a run event, or a ``ProtocolError`` that names its place."""
    kind = item.get("type") if isinstance(item, dict) else None
    if isinstance(item, dict) and isinstance(kind, str) and kind in _SPECS and kind not in BATCHABLE:
        raise ProtocolError(f"batch.messages[{n}]: a batch holds run events only, not {kind!r}")
    try:
        return from_message(item)  # type: ignore[return-value]  # a run event: checked above
    except ProtocolError as exc:
        raise ProtocolError(f"batch.messages[{n}]: {exc}") from None


def from_message(msg: Any) -> Event:
    """Decode and validate an incoming message; raise ``ProtocolError`` saying what is wrong."""
    if not isinstance(msg, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(msg).__name__}")
    v = msg.get("v")
    if not _is_int(v):
        raise ProtocolError(f"missing or non-integer protocol version 'v' (got {_brief(v)})")
    if v > PROTOCOL_VERSION:
        raise ProtocolError(
            f"the sender speaks protocol v{_brief(v)} but this aigc-lab speaks v{PROTOCOL_VERSION}: "
            "update aigc-lab (pip install -U aigc-lab) so both sides match"
        )
    if v < 1:
        raise ProtocolError(f"protocol version {_brief(v)} does not exist")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in _SPECS:
        raise ProtocolError(f"unknown message type {_brief(kind)}")
    run_check, spec = _SPECS[kind]
    if "run" not in msg or not run_check(msg["run"]):
        raise ProtocolError(f"{kind}: missing or invalid 'run'")
    _check_fields(msg, spec, kind)
    run = msg["run"]
    if kind == "hello":
        return Hello(kernel=msg["kernel"], version=msg["version"])
    if kind == "history":
        return History(id=msg["id"])
    if kind == "batch":
        return Batch(messages=tuple(_batched(n, item) for n, item in enumerate(msg["messages"])))
    if kind == "run.start":
        _check_fields(msg["model"], _MODEL_FIELDS, "run.start.model")
        model = ModelInfo(**{k: msg["model"][k] for k in _MODEL_FIELDS})
        _chat_config(msg["config"])
        return RunStart(run=run, kind=msg["kind"], model=model, config=msg["config"], t0=msg["t0"])
    if kind == "tokens":
        items = []
        for n, item in _objects(msg["items"], "tokens"):
            _check_fields(item, _ITEM_FIELDS, f"tokens.items[{n}]")
            items.append(Token(run=run, **{k: item[k] for k in _ITEM_FIELDS}, **_logprob_fields(item, n),
                               **_draft_field(item, n)))
        return Tokens(run=run, items=tuple(items))
    if kind == "train.steps":
        steps = []
        for n, item in _objects(msg["items"], "train.steps"):
            _check_fields(item, _STEP_FIELDS, f"train.steps.items[{n}]")
            steps.append(TrainStep(run=run, **{k: item[k] for k in _STEP_FIELDS}))
        return TrainSteps(run=run, items=tuple(steps))
    if kind == "run.end":
        _check_fields(msg["metrics"], _METRIC_FIELDS, "run.end.metrics")
        metrics = RunMetrics(**{k: msg["metrics"][k] for k in _METRIC_FIELDS}, **_speculative_metrics(msg["metrics"]))
        return RunEnd(run=run, status=msg["status"], metrics=metrics, error=msg["error"])
    if kind == "train.eval":
        if not all(_is_num(x) for x in msg["metrics"].values()):
            raise ProtocolError("train.eval.metrics values must be numbers")
        return TrainEval(run=run, step=msg["step"], val_loss=msg["val_loss"], ppl=msg["ppl"],
                         metrics=dict(msg["metrics"]))
    cls: dict[str, type] = {"train.step": TrainStep, "checkpoint": Checkpoint, "data.step": DataStep,
                            "cancel": Cancel, "ack": Ack}
    return cls[kind](run=run, **{k: msg[k] for k in spec})
