"""Fine-tune tab: full, LoRA or distillation fine-tuning of the loaded model on the loaded data, in the background.

Distillation needs a teacher: one of the Studio's other models (``finetuned`` / ``quantized``) or a model name /
local folder, loaded in the background. Teacher and student must share the tokenizer and the model kind; a loaded
teacher is checked before anything starts, a named one as soon as it is loaded, and either way a mismatch is
shown inline.
"""

from __future__ import annotations

import math
from typing import Any

import ipywidgets as w
from traitlets import link

from .common import DEFAULT_MODEL_NAMES, MODEL_SLOTS, Panel, UserInputError, error_message, esc, fmt, row

METHODS = ("lora", "full", "distill")
TEACHER_SLOTS = tuple(slot for slot in MODEL_SLOTS if slot != "model")  # the student is always ``model``


class FinetuneTab(Panel):
    title = "Fine-tune"
    stoppable = True

    def controls(self) -> list[w.Widget]:
        s = self.studio
        self.method_w = w.Dropdown(options=METHODS, description="method", layout=w.Layout(width="200px"))
        self.steps_w = w.IntText(description="max steps", layout=w.Layout(width="180px"))
        self.lr_w = w.FloatText(description="lr", tooltip="0 = the method's default (5e-5 full, 2e-4 LoRA)",
                                layout=w.Layout(width="180px"))
        self.batch_w = w.IntText(description="batch", layout=w.Layout(width="150px"))
        self.out_w = w.Text(description="output", placeholder="./aigc_runs/<run id>",
                            layout=w.Layout(width="auto", min_width="300px", max_width="420px"))
        self.teacher_w = w.Combobox(options=self.teacher_choices(), description="teacher", ensure_option=False,
                                    placeholder="finetuned, quantized, a model name or a local folder",
                                    tooltip="distill: the model the student learns from (same tokenizer)",
                                    layout=w.Layout(width="auto", min_width="300px", max_width="520px"))
        self.start_button = w.Button(description="Fine-tune", icon="play", button_style="primary")
        self.start_button.on_click(lambda _: self.finetune())
        self.result = w.HTML()
        for trait, widget in (("ft_method", self.method_w), ("ft_max_steps", self.steps_w), ("ft_lr", self.lr_w),
                              ("ft_batch_size", self.batch_w), ("ft_output_dir", self.out_w),
                              ("ft_teacher", self.teacher_w)):
            link((s, trait), (widget, "value"))
        self.teacher_row = row(self.teacher_w)
        s.observe(self._show_teacher, "ft_method")
        s.observe(self._refresh_teacher_choices, ["finetuned", "quantized", "catalog"])
        self._show_teacher({"new": s.ft_method})
        return [row(self.method_w, self.steps_w, self.lr_w, self.batch_w), self.teacher_row, self.out_w,
                self.start_button, self.result]

    def teacher_choices(self) -> tuple[str, ...]:
        """What the teacher box offers: the Studio's loaded models first, then the catalog and starter names."""
        s = self.studio
        loaded = [slot for slot in TEACHER_SLOTS if getattr(s, slot) is not None]
        catalog = s.catalog
        names = [str(n) for n in catalog["name"]] if catalog is not None and "name" in catalog.columns else []
        return tuple(dict.fromkeys([*loaded, *TEACHER_SLOTS, *names, *DEFAULT_MODEL_NAMES]))

    def _show_teacher(self, change: dict[str, Any]) -> None:
        self.teacher_row.layout.display = None if change["new"] == "distill" else "none"

    def _refresh_teacher_choices(self, change: dict[str, Any]) -> None:
        self.teacher_w.options = self.teacher_choices()

    def action_buttons(self) -> list[w.Button]:
        return [self.start_button]

    def _validate(self) -> tuple[Any, Any, dict[str, Any]]:
        s = self.studio
        if s.ft_method not in METHODS:
            raise UserInputError(f"method must be one of {', '.join(METHODS)}")
        if s.ft_max_steps < 1:
            raise UserInputError("max steps must be at least 1")
        if s.ft_batch_size < 1:
            raise UserInputError("batch must be at least 1")
        if s.ft_lr < 0 or not math.isfinite(s.ft_lr):
            raise UserInputError("lr must be a positive number (0 = the method's default)")
        model = self.model_from("model")
        data = s.splits if s.splits is not None else s.dataset
        if data is None:
            raise UserInputError("no data yet: load some in the Data tab")
        hparams: dict[str, Any] = {"max_steps": s.ft_max_steps, "batch_size": s.ft_batch_size, "progress": False}
        if s.ft_method == "distill":
            hparams["teacher"] = self._teacher(model)
        if s.ft_lr:
            hparams["lr"] = s.ft_lr
        if s.ft_output_dir.strip():
            hparams["output_dir"] = s.ft_output_dir.strip()
        return model, data, hparams

    def _teacher(self, student: Any) -> Any:
        """The teacher of a distillation: a loaded handle (checked here) or a name to load in the background."""
        name = self.studio.ft_teacher.strip()
        if not name:
            raise UserInputError("distill needs a teacher: pick finetuned / quantized (the Studio's other models), "
                                 "or type a model name or local folder with the same tokenizer as the model")
        if name == "model":
            raise UserInputError("the teacher cannot be the model being trained: pick finetuned, quantized, "
                                 "or another model with the same tokenizer")
        if name not in TEACHER_SLOTS:
            return name  # loaded and checked when the action starts
        teacher = self.model_from(name)
        if teacher is student:
            raise UserInputError(f"{name} is the model being trained: pick another teacher")
        from ...train.distill import check_teacher

        check_teacher(student, teacher)  # TrainConfigError (an AigcLabError): shown inline as written
        return teacher

    def finetune(self) -> bool:
        """Start fine-tuning in the background; sets ``studio.run`` (and ``studio.finetuned`` when it ends ok)."""
        s = self.studio
        ok, args = self.checked(self._validate)
        if not ok:
            return False
        model, data, hparams = args
        try:
            from ...train import finetune
        except Exception as exc:  # noqa: BLE001 - the engine may be missing or broken: say so inline
            self.fail(f"fine-tuning is not available in this installation ({error_message(exc)})")
            return False
        method, total = s.ft_method, hparams["max_steps"]
        self._cancel.clear()
        s.run = None  # the run of this click replaces the last one as soon as it exists

        def work() -> str:
            self.progress.max, self.progress.value = total, 0
            teacher = hparams.pop("teacher", None)
            if isinstance(teacher, str):
                from ...models import load

                self.status = f"loading the teacher {teacher}…"
                teacher = load(teacher)
            run = finetune(model, data, method=method, teacher=teacher, background=True, **hparams)
            s.run = run
            if self._cancel.is_set():
                run.cancel()
            while not run.done:
                self._show_progress(run, total)
                self._cancel.wait(0.25)
                if self._cancel.is_set():
                    run.cancel()
            self._show_progress(run, total)
            run.wait()  # re-raises the error of a failed run
            if run.status == "ok":
                s.finetuned = run.model
            self.result.value = self._result_html(run)
            return f"{method} fine-tuning {run.status}: step {run.step}/{total}{self._loss(run)}"

        return self.start(f"Fine-tuning ({method})", work, determinate=True)

    def stop(self) -> None:
        self._cancel.set()
        run = self.studio.run
        if run is not None and self.busy:
            run.cancel()
            self.status = "stopping after the current step…"

    def _show_progress(self, run: Any, total: int) -> None:
        self.progress.value = min(run.step, total)
        self.status = f"step {run.step}/{total}{self._loss(run)}"

    @staticmethod
    def _loss(run: Any) -> str:
        hist = run.history
        if hist is None or len(hist) == 0 or "loss" not in hist:
            return ""
        losses = hist["loss"].dropna()
        return f", loss {fmt(float(losses.iloc[-1]), digits=4)}" if len(losses) else ""

    @staticmethod
    def _result_html(run: Any) -> str:
        best = run.best
        best_txt = f" · best val_loss {fmt(best.get('val_loss'), digits=4)} at step {best.get('step')}" if best else ""
        ckpt = run.last_checkpoint
        return (f"<b>{esc(run.run)}</b> · {esc(run.config.method)} · {esc(run.status)} · step {run.step}"
                f"{FinetuneTab._loss(run)}{best_txt}"
                + (f" · checkpoint <code>{esc(ckpt)}</code>" if ckpt else ""))
