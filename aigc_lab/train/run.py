"""``finetune`` and ``TrainRun``: start a fine-tuning run (background thread by default) and follow it."""

from __future__ import annotations

import html
import threading
from pathlib import Path
from typing import Any

from .. import runs
from ..bus import EventBus
from ..bus import bus as default_bus
from ..errors import RunNotFinishedError
from .config import TrainConfig
from .loop import Loop


def history_frame(steps: list[dict[str, Any]], evals: list[dict[str, Any]]) -> Any:
    """Steps (step, epoch, loss, lr, tok_s) outer-joined with evals (val_loss, ppl, metrics) on ``step``."""
    import pandas as pd

    frame = pd.DataFrame(list(steps), columns=["step", "epoch", "loss", "lr", "tok_s"])
    found = pd.DataFrame(list(evals))
    if found.empty:
        return frame.assign(val_loss=float("nan"), ppl=float("nan"))
    return frame.merge(found, on="step", how="outer").sort_values("step", ignore_index=True)


class TrainRun:
    """A fine-tuning run on a background thread (or the caller's): ``.wait()``, ``.cancel()``, ``.history``,
    ``.model``, ``.best``, ``.status``, ``.run``; the interface it shares with ``DistributedRun`` is
    ``train/interface.py``'s ``FinetuneRun``."""

    def __init__(self, loop: Loop, flag: threading.Event) -> None:
        self._loop = loop
        self._flag = flag
        self.run: str = loop.run_id
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._merged: Any = None

    # -- control ---------------------------------------------------------------------------------

    def _target(self) -> None:
        try:
            self._loop.run()
        finally:
            runs.unregister(self.run)
            self._done.set()

    def _start(self, background: bool) -> None:
        if background:
            self._thread = threading.Thread(target=self._target, name=f"aigc-lab-{self.run}", daemon=True)
            self._thread.start()
        else:
            self._target()

    def wait(self, timeout: float | None = None) -> TrainRun:
        """Block until the run ends (or ``timeout`` s); re-raise the error of a failed run."""
        self._done.wait(timeout)
        if self._loop.error is not None:
            raise self._loop.error
        return self

    def cancel(self) -> None:
        """Stop before the next step; a checkpoint is written and the run ends ``cancelled``."""
        self._flag.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    # -- results ---------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        """``pending``, ``running``, ``ok``, ``cancelled`` or ``error``."""
        return self._loop.status

    @property
    def error(self) -> BaseException | None:
        return self._loop.error

    @property
    def config(self) -> TrainConfig:
        return self._loop.cfg

    @property
    def history(self) -> Any:
        """One row per step (step, epoch, loss, lr, tok_s); eval columns (val_loss, ppl, metrics) where evaluated."""
        return history_frame(self._loop.progress.steps, self._loop.progress.evals)

    @property
    def steps(self) -> list[dict[str, Any]]:
        """One dict per step so far: step, epoch, loss, lr, tok_s."""
        return list(self._loop.progress.steps)

    @property
    def losses(self) -> list[float]:
        return [s["loss"] for s in self._loop.progress.steps]

    @property
    def evals(self) -> list[dict[str, Any]]:
        return list(self._loop.progress.evals)

    @property
    def best(self) -> dict[str, Any] | None:
        """The eval with the lowest validation loss: ``{"step", "val_loss", "ppl", ...metrics}``."""
        return self._loop.progress.best

    @property
    def step(self) -> int:
        return self._loop.progress.step

    @property
    def checkpoints(self) -> list[Path]:
        """Checkpoints written by this run, oldest first (pruned ones may no longer exist)."""
        return [Path(p) for p in self._loop.progress.checkpoints]

    @property
    def peak_memory_mb(self) -> float | None:
        """Memory this run added at its peak, in MB (RSS on CPU, allocation on CUDA; None before it ran)."""
        m = self._loop.memory
        return None if m is None else m.added_mb

    @property
    def last_checkpoint(self) -> Path | None:
        found = [p for p in self.checkpoints if p.exists()]
        return found[-1] if found else None

    @property
    def model(self) -> Any:
        """The trained model as a ``ModelHandle`` (LoRA: adapters merged in; saves with ``save_pretrained``)."""
        from ..models import ModelHandle

        if not self.done:
            raise RunNotFinishedError("the run is still going: call .wait() first (or .cancel())")
        if self._merged is None:
            loop = self._loop
            model = loop._unwrapped()
            if loop.cfg.method == "lora":
                from .lora import merge

                model = merge(model)
            model.eval()
            h = loop.handle
            if loop.chat:  # the trained model stops where its turn ends, like the template it learned
                from ..data.chat_templates import stop_at_end_of_turn

                stop_at_end_of_turn(model, loop.tokenizer)
            self._merged = ModelHandle(model=model, tokenizer=loop.tokenizer, name=f"{h.name}+{loop.cfg.method}",
                                       kind=h.kind)
        return self._merged

    def save_adapter(self, path: Any) -> Path:
        """LoRA only: save the adapters alone (``adapter_model.safetensors`` + ``adapter_config.json``).

        Works before or after ``.model`` merged them: the weights saved are the copy taken when training ended.
        """
        from .config import TrainConfigError
        from .lora import save_adapter

        loop = self._loop
        if loop.cfg.method != "lora" or loop.adapter is None:
            raise TrainConfigError("save_adapter needs a finished method='lora' run")
        save_adapter(loop._unwrapped(), loop.adapter, path)
        return Path(path)

    def __repr__(self) -> str:
        p = self._loop.progress
        last = f", loss {p.steps[-1]['loss']:.4f}" if p.steps else ""
        return f"TrainRun({self.run!r}, {self.status}, step {p.step}/{getattr(self._loop, 'total', '?')}{last})"

    def _repr_html_(self) -> str:
        return f"<code>{html.escape(repr(self))}</code>"


def finetune(model: Any, dataset: Any, method: str = "full", teacher: Any = None, *, val: Any = None,
             resume: Any = None, background: bool = True, inplace: bool = False, event_bus: EventBus | None = None,
             **hparams: Any) -> TrainRun:
    """Fine-tune ``model`` (a ``ModelHandle`` or a name for ``al.models.load``) on ``dataset``.

    ``dataset``: a ``Dataset``, ``Splits`` (train + val), a list of strings (causal LM) or of (input, target)
    pairs. ``method``: ``full``, ``lora`` or ``distill`` (needs ``teacher``, a model with the same tokenizer).
    ``resume``: a checkpoint folder (or a run folder: its newest checkpoint) to continue from.
    ``background`` (default): train on a worker thread and return at once; ``.wait()`` blocks.
    The model is copied first unless ``inplace=True``. Hyper-parameters: see ``TrainConfig``
    (``lr``, ``schedule``, ``epochs``/``max_steps``, ``batch_size``, ``grad_accum``, ``max_length``,
    ``weight_decay``, ``max_grad_norm``, ``seed``, ``eval_every``, ``patience``, ``precision``, ``packing``,
    ``save_every``, ``output_dir``, ``lora_r``, ``temperature``, ``alpha``, ``progress``...).
    Conversations train on the assistant's tokens (``train_on``); with LoRA the chat template's marker tokens'
    embedding rows train too (``lora_marker_tokens``). Generative evals (pairs, conversations; ``eval_generate``
    examples every ``eval_every`` steps) report exact match, chrF and BLEU.
    """
    from ..models import ModelHandle, load

    cfg = TrainConfig.from_kwargs(method, hparams)
    handle = model if isinstance(model, ModelHandle) else load(model)
    if teacher is not None and not isinstance(teacher, ModelHandle):
        teacher = load(teacher)
    run_id = runs.new_run_id("train")
    flag = runs.register(run_id)
    loop = Loop(handle, dataset, cfg, run_id=run_id, event_bus=event_bus or default_bus, cancel_flag=flag,
                teacher=teacher, val=val, resume=resume, inplace=inplace)
    try:
        loop.precheck()
    except BaseException:
        runs.unregister(run_id)
        raise
    tr = TrainRun(loop, flag)
    tr._start(background)
    if not background and loop.error is not None:
        raise loop.error
    return tr
