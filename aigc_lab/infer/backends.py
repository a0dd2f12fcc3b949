"""The one place that decides how a generation runs: a layer backend (``infer/layers.py``) and a stepper.

``STEPPERS`` lists every step strategy, fastest first. Each entry says, for a model on the chosen layers and a
request, why it cannot run it (``refusal``; None when it can) and builds the ``Stepper`` (``infer/stepper.py``)
that owns the model call and the cache. The first entry that applies runs; every run's ``run.start`` config
records it (``stepper``, ``layers``) and why each entry before it did not (``not_chosen``), and
``al.infer.explain`` prints the same before running. A new strategy is a new entry here (the parity tests run
over every entry that applies to each test model).

A token's path: ``generate`` -> ``plan`` (layers, stepper) -> ``decode`` (tokenize, ``stepper.prefill``, then per
token: sample, stop rules, emit, ``stepper.step``) -> ``TokenStream`` -> the bus.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import GenerationConfigError
from .forward_step import ForwardStepper, Seq2SeqStepper
from .fused_step import FusedStepper, fused_gpt2_refusal, fused_llama_refusal, gpt2_decoder, llama_decoder
from .layers import LAYER_BACKENDS, Layers, choose_layers
from .lean_step import LeanStepper, gpt2_refusal, gpt2_step, llama_refusal, llama_step
from .stepper import DecodeRequest, Stepper


@dataclass(frozen=True)
class StepperEntry:
    name: str
    summary: str
    refusal: Callable[[Any, Any, DecodeRequest], str | None]  # (handle, model, request) -> why not, or None
    build: Callable[[Any, int], Stepper]  # (model, capacity) -> a fresh stepper for one generation


def _causal(kind: str) -> Callable[[Any, Any, DecodeRequest], str | None]:
    """Refusal for a causal stepper: the model's own check for one sequence (``kind``)."""
    checks = {"fused-gpt2": fused_gpt2_refusal, "fused-llama": fused_llama_refusal, "lean-gpt2": gpt2_refusal,
              "lean-llama": llama_refusal}

    def refusal(handle: Any, model: Any, request: DecodeRequest) -> str | None:
        if handle.kind == "seq2seq":
            return "an encoder-decoder model"
        if request.batch != 1:
            return f"a batch of {request.batch} prompts"
        return checks[kind](model) if kind in checks else None

    return refusal


def _batch_refusal(handle: Any, model: Any, request: DecodeRequest) -> str | None:
    if handle.kind == "seq2seq":
        return "an encoder-decoder model"
    return None if request.batch > 1 else "one prompt"


def _seq2seq_refusal(handle: Any, model: Any, request: DecodeRequest) -> str | None:
    return None if handle.kind == "seq2seq" else "not an encoder-decoder model"


STEPPERS: tuple[StepperEntry, ...] = (
    StepperEntry("fused-gpt2", "GPT-2, each token one C++ kernel call", _causal("fused-gpt2"),
                 lambda model, capacity: FusedStepper(model, capacity, gpt2_decoder)),
    StepperEntry("fused-llama", "Llama / Mistral / Qwen2 / Qwen3, each token one C++ kernel call",
                 _causal("fused-llama"), lambda model, capacity: FusedStepper(model, capacity, llama_decoder)),
    StepperEntry("lean-gpt2", "GPT-2's layers called in order, without transformers' generic forward",
                 _causal("lean-gpt2"), lambda model, capacity: LeanStepper(model, capacity, gpt2_step)),
    StepperEntry("lean-llama", "a Llama-family model's layers called in order", _causal("lean-llama"),
                 lambda model, capacity: LeanStepper(model, capacity, llama_step)),
    StepperEntry("seq2seq", "encoder once, then the decoder's forward per token", _seq2seq_refusal,
                 lambda model, capacity: Seq2SeqStepper(model)),
    StepperEntry("batch", "the model's forward over a left-padded batch", _batch_refusal, ForwardStepper),
    StepperEntry("forward", "the model's forward per token (any causal LM)", _causal("forward"), ForwardStepper),
)


@dataclass(frozen=True)
class Plan:
    """How a generation will run: the layers, the stepper, and why each one before them was not chosen."""

    layers: Layers
    stepper: StepperEntry
    skipped_layers: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """What ``run.start``'s config says about it (JSON)."""
        return {"stepper": self.stepper.name, "layers": self.layers.name,
                "not_chosen": [f"{name}: {why}" for name, why in self.skipped_layers + self.skipped],
                **({"layers_note": self.layers.note} if self.layers.note else {})}

    def __str__(self) -> str:
        def rows(title: str, entries: Any, chosen: str, skipped: list[tuple[str, str]]) -> list[str]:
            why = dict(skipped)
            out = [title]
            for entry in entries:
                if entry.name == chosen:
                    out.append(f"  * {entry.name:<14} {entry.summary}  <- runs")
                else:
                    out.append(f"    {entry.name:<14} not used: {why.get(entry.name, 'ranks after the chosen one')}")
            return out

        lines = rows("layers:", LAYER_BACKENDS, self.layers.name, self.skipped_layers)
        if self.layers.note:
            lines.append(f"    ({self.layers.note})")
        return "\n".join(lines + rows("stepper:", STEPPERS, self.stepper.name, self.skipped))

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def plan(handle: Any, request: DecodeRequest) -> Plan:
    """Choose the layer backend, then the first stepper that applies to the model on those layers; every other
    entry is listed with its reason (for those that would apply too: the one that ranks before them)."""
    layers, skipped_layers = choose_layers(handle, request)
    chosen: StepperEntry | None = None
    skipped: list[tuple[str, str]] = []
    for entry in STEPPERS:
        reason = entry.refusal(handle, layers.model, request)
        if reason is None and chosen is None:
            chosen = entry
        else:
            skipped.append((entry.name, reason or f"applies, but {chosen.name} ranks first"))  # type: ignore[union-attr]
    assert chosen is not None, "the forward and seq2seq steppers cover every model"
    if request.stepper is not None and request.stepper != chosen.name:
        why = dict(skipped)
        if request.stepper not in why:
            raise GenerationConfigError(f"unknown stepper {request.stepper!r}; the registry has "
                                        f"{', '.join(e.name for e in STEPPERS)}")
        entry = next(e for e in STEPPERS if e.name == request.stepper)
        if entry.refusal(handle, layers.model, request) is not None:
            raise GenerationConfigError(f"stepper {request.stepper!r} cannot run this generation: "
                                        f"{why[request.stepper]} (layers: {layers.name})")
        skipped = [(chosen.name, f"applies, but stepper={entry.name!r} was asked for")] + [
            x for x in skipped if x[0] != entry.name]
        chosen = entry
    return Plan(layers, chosen, skipped_layers, skipped)
