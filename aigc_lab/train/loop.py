"""The training loop: set-up (copy, LoRA, data, optimizer, resume), then one optimizer step at a time.

The step loop publishes one ``TrainStep`` per step (a frozen dataclass: no I/O, no JSON) and checks
the cancel flag before every step; it writes only checkpoints. ``Loop.run`` always ends with exactly
one ``run.end``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.chat_templates import check_markers, marker_ids, name_of, resolve
from ..events import Checkpoint, RunEnd, RunMetrics, RunStart, TrainEval, TrainStep
from ..models import memory
from ..models.fused_ops import fuse_activations
from ..models.handle import shared_copy
from ..progress import progress_bar
from . import checkpoint as ckpt
from .chat_data import is_conversations, loss_share
from .collate import Batches, Encoded, as_examples, encode, is_pairs
from .config import TrainConfig, TrainConfigError
from .distill import check_teacher, distill_loss
from .evaluate import chat_scores, eval_loss, pair_scores, perplexity
from .fused_loss import causal_lm_loss, fusable
from .lora import adapter_state, apply_lora, load_adapter_into, lora_targets
from .peak_memory import PeakMemory
from .precision import Precision, choose, master_weights, restore_dtype, weights_dtype
from .schedule import make_scheduler

# hyper-parameters that fix the data order and model shape: a resumed run must keep them
RESUME_FIXED = ("method", "batch_size", "grad_accum", "max_length", "max_target_length", "packing", "seed",
                "lora_r", "lora_alpha", "lora_targets", "lora_marker_tokens", "train_on", "chat_template")


@dataclass
class Progress:
    """What the run has done so far (the part of a checkpoint that is not tensors)."""

    step: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    bad_evals: int = 0
    tokens: int = 0
    checkpoints: list[str] = field(default_factory=list)


class Loop:
    """One fine-tuning run of ``handle`` on ``data``; ``run()`` trains and returns the final status."""

    def __init__(self, handle: Any, data: Any, cfg: TrainConfig, *, run_id: str, event_bus: Any,
                 cancel_flag: threading.Event, teacher: Any = None, val: Any = None, resume: Any = None,
                 inplace: bool = False, rank: int = 0, world: int = 1, accelerator: Any = None) -> None:
        self.handle, self.cfg, self.run_id, self.bus, self.flag = handle, cfg, run_id, event_bus, cancel_flag
        self.teacher, self.inplace, self.rank, self.world, self.accel = teacher, inplace, rank, world, accelerator
        self.kind = "seq2seq" if handle.kind == "seq2seq" else "causal"
        self.train_ex, found_val = as_examples(data)
        self.val_ex = as_examples(val)[0] if val is not None else found_val
        self.tokenizer = handle.tokenizer  # conversations with a template given by name: a copy that carries it
        self.chat_template: str | None = None
        self.lora_tokens: tuple[int, ...] = ()  # embedding rows LoRA trains too (the chat markers)
        self.loss_share: float | None = None
        self.train_enc: Encoded | None = None
        self.chat = is_conversations(self.train_ex)
        if self.chat:
            self._use_chat_template()
        self.resume = ckpt.resolve(resume) if resume is not None else None
        self.progress = Progress()
        self.status = "pending"
        self.error: BaseException | None = None
        self.model: Any = None
        self.adapter: dict[str, Any] | None = None
        out = cfg.output_dir or (str(self.resume.parent) if self.resume else f"aigc_runs/{run_id}")
        self.output_dir = Path(out)
        self.main = rank == 0
        self.memory: PeakMemory | None = None  # what the run added at its peak (set when it ran)
        self.cancel_all = False  # world > 1: some process was asked to stop (seen by all after the same step)

    # -- set-up ----------------------------------------------------------------------------------

    def _use_chat_template(self) -> None:
        """Conversations: resolve the chat template (refused here, in the caller's thread, when there is none)
        and check its markers; a template other than the tokenizer's own goes on a copy of the tokenizer, so
        checkpoints and the trained model are saved with the template they were trained with."""
        if self.kind == "seq2seq":
            raise TrainConfigError("conversations train a causal (decoder-only) model; this one is seq2seq")
        if self.val_ex and not is_conversations(self.val_ex):
            raise TrainConfigError("the training data are conversations but the validation data are not; "
                                   "give conversations for both")
        tok = self.handle.tokenizer
        jinja = resolve(tok, self.cfg.chat_template)
        check_markers(tok, jinja)
        if jinja != getattr(tok, "chat_template", None):
            tok = copy.deepcopy(tok)
            tok.chat_template = jinja
        self.tokenizer, self.chat_template = tok, jinja
        if self.cfg.method == "lora" and self.cfg.lora_marker_tokens:
            self.lora_tokens = marker_ids(tok, jinja)

    def _encode(self, examples: Any) -> Encoded:
        cfg = self.cfg
        return encode(examples, self.tokenizer, self.kind, max_length=cfg.max_length,
                      max_target_length=cfg.max_target_length, packing=cfg.packing, chat_template=self.chat_template,
                      train_on=cfg.train_on)

    def _device(self) -> Any:
        import torch

        if self.accel is not None:
            return self.accel.device
        return torch.device(self.cfg.device or self.handle.device)

    def _autocast(self) -> Any:
        """A callable giving a fresh autocast context per forward (``train/precision.py``), or None (fp32)."""
        if self.precision.autocast is None:
            return None
        device_type = self.device.type
        return lambda: self.precision.context(device_type)

    def precheck(self) -> None:
        """Refuse early, in the caller's thread: teacher, LoRA targets, memory, resume compatibility."""
        cfg = self.cfg
        if cfg.method == "distill":
            check_teacher(self.handle, self.teacher)
        if cfg.method == "lora" and self.handle.kind == "rnn":
            raise TrainConfigError("LoRA needs attention/linear layers; train the LSTM baseline with method='full'")
        self.device = self._device()
        src = self.handle.model
        self.precision: Precision = choose(cfg.precision, weights=weights_dtype(src), device=self.device)
        self.autocast = self._autocast()
        targets = lora_targets(src, cfg.lora_targets)[0] if cfg.method == "lora" else ()
        copied = not self.inplace and cfg.method != "lora"  # LoRA shares the frozen base (shared_copy)
        need = memory.training_memory(
            src, batch_size=cfg.batch_size, seq_len=cfg.max_length, copy=copied,
            trainable_params=memory.lora_params(src, targets, cfg.lora_r) if targets else None,
            teacher=self.teacher, autocast=self.autocast is not None,
            checkpointing=cfg.checkpointing and _can_checkpoint(src))
        memory.check_training_fits(need, device=self.device, method=cfg.method, batch_size=cfg.batch_size,
                                   seq_len=cfg.max_length)
        if self.chat:  # refuse a run where no token carries loss before any worker starts
            self.train_enc = self._encode(self.train_ex)
            self.loss_share = loss_share(self.train_enc)
            if self.loss_share == 0:
                raise TrainConfigError(
                    f"no token carries loss: with train_on={cfg.train_on!r} no assistant reply was found in the "
                    f"first max_length={cfg.max_length} tokens of any conversation (replies cut off, or a template "
                    "whose markers the tokenizer does not have as tokens); raise max_length, pick another "
                    "chat_template=, or train_on='all'")
        self.meta = ckpt.read_meta(self.resume) if self.resume else None
        if self.meta is not None:
            old = self.meta["config"]
            changed = [k for k in RESUME_FIXED if k in old and old[k] != cfg.to_dict()[k]]
            if changed:
                raise TrainConfigError(f"resume with the same {', '.join(changed)} as the checkpoint "
                                       f"({', '.join(f'{k}={old[k]!r}' for k in changed)})")

    def setup(self) -> None:

        cfg, meta, src = self.cfg, self.meta, self.handle.model
        self._seed(cfg.seed)
        if self.inplace:
            model = src
        elif cfg.method == "lora":  # the frozen base is shared with the original, not copied
            model = shared_copy(src)
        else:
            model = copy.deepcopy(src)
        model.to(self.device)
        if not self.inplace or self.world > 1:  # this run's own modules (ranks: their process's copy)
            fuse_activations(model)  # same formula, one op: fewer passes in a GPT-2 step's forward + backward
        if cfg.checkpointing:
            if _can_checkpoint(model):  # on this run's copy only: the caller's model is untouched
                _enable_checkpointing(model)
            elif cfg.gradient_checkpointing:
                raise TrainConfigError(f"{type(model).__name__} does not support gradient checkpointing; "
                                       "train with gradient_checkpointing=False")
        if cfg.method == "lora":
            model = apply_lora(model, self.kind, cfg, self.lora_tokens)
        master_weights(model)  # 16-bit weights train as fp32 master copies (train/precision.py)
        if self.resume is not None:
            if cfg.method == "lora":
                load_adapter_into(model, self.resume / "adapter", self.device)
            else:
                ckpt.load_weights(model, self.resume, self.device)
        model.train()
        self.model = model
        # the fused loss needs the plain forward: not under DDP (its hooks run in forward), autocast or distill
        self.fused = (cfg.fused_loss and self.kind == "causal" and cfg.method != "distill" and self.accel is None
                      and self.autocast is None and fusable(model))
        if self.teacher is not None:
            self.teacher.model.eval()
        if self.train_enc is None:
            self.train_enc = self._encode(self.train_ex)
        if len(self.train_enc) == 0:
            raise TrainConfigError("no training examples left after tokenization")
        self.batches = Batches(self.train_enc, cfg.batch_size, cfg.seed, rank=self.rank, world=self.world)
        self.val_batches = None
        if self.val_ex:
            self.val_batches = Batches(self._encode(self.val_ex), cfg.batch_size, cfg.seed, shuffle=False)
        self.total = cfg.max_steps or max(1, math.ceil(cfg.epochs * self.batches.per_epoch / cfg.grad_accum))
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_ratio * self.total)
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if p.dim() < 2 or "norm" in name.lower() else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        self.optimizer = adamw(groups, lr=cfg.learning_rate, betas=cfg.betas)
        self.scheduler = make_scheduler(self.optimizer, self.total, warmup, cfg.schedule, cfg.min_lr_ratio)
        if self.accel is not None:
            self.model, self.optimizer = self.accel.prepare(self.model, self.optimizer)
        if meta is not None:
            state = ckpt.load_state(self.resume, self.device)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            p = self.progress
            p.step, p.steps, p.evals, p.best = meta["step"], meta["steps"], meta["evals"], meta["best"]
            p.bad_evals, p.tokens = meta["bad_evals"], meta["tokens"]
            ckpt.set_rng_state(state["rng"])

    @staticmethod
    def _seed(seed: int) -> None:
        import torch

        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    # -- events ----------------------------------------------------------------------------------

    def publish(self, event: Any) -> None:
        if self.main:
            self.bus.publish(event)

    def start_event(self) -> None:
        info = self.handle.info()
        chat = {"chat_template": self.chat_template, "chat_template_name": name_of(self.chat_template),
                "loss_share": self.loss_share, "lora_trainable_tokens": list(self.lora_tokens)} if self.chat else {}
        self.publish(RunStart(run=self.run_id, kind="train", model=info,
                              config={**self.cfg.to_dict(), "resume": str(self.resume) if self.resume else None,
                                      "autocast": self.precision.autocast, "master_weights": "float32",
                                      "train_examples": len(self.train_ex), "world": self.world, **chat},
                              t0=time.time() * 1000))

    # -- the loop --------------------------------------------------------------------------------

    def _unwrapped(self) -> Any:
        return self.accel.unwrap_model(self.model) if self.accel is not None else self.model

    def _loss(self, batch: dict[str, Any]) -> Any:
        import torch

        if self.fused:
            return causal_lm_loss(self.model, batch)
        with self.autocast() if self.autocast else contextlib.nullcontext():
            # no KV cache while training (a recomputed layer must not append to one either)
            out = self.model(**batch, use_cache=False)
            loss = out.loss
            if self.cfg.method == "distill":
                tb = {k: v.to(self.teacher.device) for k, v in batch.items()}
                with torch.no_grad():
                    t_logits = self.teacher.model(**tb).logits.to(out.logits.device)
                loss = distill_loss(out.logits, t_logits, batch["labels"], loss, temperature=self.cfg.temperature,
                                    alpha=self.cfg.alpha, causal=self.kind == "causal")
        return loss

    def _step(self, step: int) -> tuple[float, int]:
        """One optimizer step (``grad_accum`` micro-batches); returns (mean loss, tokens).

        With ``world > 1`` the loss, the token count and this process's cancel flag are summed over all
        processes in one ``all_reduce``, so every process sees the same curve and stops after the same step.
        """
        import torch

        cfg = self.cfg
        total = torch.zeros((), device=self.device)
        tokens = 0
        for a in range(cfg.grad_accum):
            cpu = self.batches.batch(step * cfg.grad_accum + a)
            tokens += int(cpu["attention_mask"].sum())
            batch = {k: v.to(self.device, non_blocking=True) for k, v in cpu.items()}
            last = a == cfg.grad_accum - 1
            sync = self.accel.no_sync(self.model) if self.accel is not None and not last else contextlib.nullcontext()
            with sync:  # DDP: gradients are all-reduced once, on the last micro-batch
                loss = self._loss(batch)
                if self.accel is not None:
                    self.accel.backward(loss / cfg.grad_accum)
                else:
                    (loss / cfg.grad_accum).backward()
            total += loss.detach()
        if cfg.max_grad_norm:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            if self.accel is not None:
                self.accel.clip_grad_norm_(params, cfg.max_grad_norm)
            else:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = total / cfg.grad_accum
        if self.world > 1:
            import torch.distributed as dist

            buf = torch.stack([loss.float(), torch.tensor(float(tokens), device=self.device),
                               torch.tensor(float(self.flag.is_set()), device=self.device)])
            dist.all_reduce(buf)
            loss, tokens = buf[0] / self.world, int(buf[1])
            self.cancel_all = bool(buf[2] > 0)
        return float(loss), tokens

    def _sync_evals(self) -> None:
        """``world > 1``: rank 0 evaluates; every process learns its early-stopping count (same break step)."""
        if self.world <= 1 or self.val_batches is None:
            return
        import torch
        import torch.distributed as dist

        buf = torch.tensor([float(self.progress.bad_evals)], device=self.device)
        dist.broadcast(buf, src=0)
        self.progress.bad_evals = int(buf[0])

    def evaluate(self, step: int) -> dict[str, Any] | None:
        if self.val_batches is None or not self.main:
            return None
        model = self._unwrapped()
        val = eval_loss(model, self.val_batches, self.device, limit=self.cfg.eval_batches, autocast=self.autocast)
        metrics: dict[str, float] = {}
        if self.cfg.eval_generate and is_pairs(self.val_ex):
            metrics = pair_scores(model, self.handle.tokenizer, self.val_ex[:self.cfg.eval_generate], kind=self.kind,
                                  max_new_tokens=self.cfg.max_target_length)
        elif self.cfg.eval_generate and self.chat:
            metrics = chat_scores(model, self.tokenizer, self.val_ex[:self.cfg.eval_generate],
                                  chat_template=self.chat_template, max_new_tokens=self.cfg.max_target_length)
        record = {"step": step, "val_loss": val, "ppl": perplexity(val), **metrics}
        self.progress.evals.append(record)
        self.publish(TrainEval(run=self.run_id, step=step, val_loss=val, ppl=record["ppl"], metrics=metrics))
        p = self.progress
        if p.best is None or val < p.best["val_loss"]:
            p.best, p.bad_evals = dict(record), 0
        else:
            p.bad_evals += 1
        return record

    def save(self, step: int, *, periodic: bool = False) -> Path | None:
        if not self.main:
            return None
        p = self.progress
        meta = {"step": step, "micro_batch": step * self.cfg.grad_accum, "epoch": self.batches.epoch_of(
            step * self.cfg.grad_accum), "config": self.cfg.to_dict(), "best": p.best, "bad_evals": p.bad_evals,
            "tokens": p.tokens, "steps": p.steps, "evals": p.evals, "run": self.run_id,
            "model": self.handle.name, "kind": self.handle.kind}
        model = self._unwrapped()
        adapter = adapter_state(model) if self.cfg.method == "lora" else None
        path = ckpt.save(self.output_dir, step, model=model, tokenizer=self.tokenizer, adapter=adapter,
                         optimizer=self.optimizer, scheduler=self.scheduler, meta=meta)
        p.checkpoints.append(str(path))
        if periodic:
            ckpt.prune(self.output_dir, self.cfg.keep_last, protect=path)
        self.publish(Checkpoint(run=self.run_id, step=step, path=str(path)))
        return path

    def run(self) -> str:
        """Train to the end (or cancel / early stop); publish ``run.end``; return the status."""
        t_start = time.perf_counter()
        started = False
        try:
            self.memory = PeakMemory(self._device())
            with self.memory:  # from before the copy of the model to the end (checkpoints included)
                self.setup()
                self.start_event()
                started = True
                self.status = "running"
                self.status = self._train()
        except KeyboardInterrupt:
            self.status = "cancelled"
            self._save_quietly()
            self._restore_dtype()
            self._end(t_start, started)
            raise
        except BaseException as exc:  # noqa: BLE001 - reported as run.end(error) and re-raised by wait()
            self.status, self.error = "error", exc
            if not started:
                self.start_event_safe()
        self._restore_dtype()
        self._end(t_start, True)
        return self.status

    def _restore_dtype(self) -> None:
        """A full fine-tune of a 16-bit model ends in the dtype it came in (checkpoints keep the fp32 masters);
        LoRA's adapters stay fp32, as peft keeps them, and merge into the base's dtype."""
        if self.model is not None and self.cfg.method != "lora":
            restore_dtype(self._unwrapped(), self.precision)

    def start_event_safe(self) -> None:
        with contextlib.suppress(Exception):
            self.publish(RunStart(run=self.run_id, kind="train", model=self.handle.info(),
                                  config=self.cfg.to_dict(), t0=time.time() * 1000))

    def _save_quietly(self) -> None:
        if self.model is not None and self.progress.step > 0:
            with contextlib.suppress(Exception):
                self.save(self.progress.step)

    def _train(self) -> str:
        cfg, p = self.cfg, self.progress
        bar = progress_bar(total=self.total, initial=p.step, desc=self.run_id, disable=not (cfg.progress and self.main),
                   leave=True, dynamic_ncols=True)
        last_eval = last_save = -1
        status = "ok"
        t_loop, first = time.perf_counter(), p.step
        try:
            while p.step < self.total:
                if self.cancel_all if self.world > 1 else self.flag.is_set():
                    status = "cancelled"
                    break
                t0 = time.perf_counter()
                lr = self.scheduler.get_last_lr()[0]
                loss, tokens = self._step(p.step)
                p.step += 1
                p.tokens += tokens
                tok_s = tokens / max(time.perf_counter() - t0, 1e-9)
                p.steps.append({"step": p.step, "epoch": self.batches.epoch_of(p.step * cfg.grad_accum),
                                "loss": loss, "lr": lr, "tok_s": tok_s,
                                "elapsed_s": time.perf_counter() - t_loop})  # since this session's first step
                if p.step % cfg.log_every == 0:
                    elapsed = time.perf_counter() - t_loop
                    eta = elapsed / (p.step - first) * (self.total - p.step)
                    self.publish(TrainStep(run=self.run_id, step=p.step, loss=loss, lr=lr, tok_s=tok_s,
                                           epoch=p.steps[-1]["epoch"], eta_s=eta))
                bar.update(1)
                if cfg.eval_every and p.step % cfg.eval_every == 0:
                    self.evaluate(p.step)
                    self._sync_evals()
                    last_eval = p.step
                if cfg.save_every and p.step % cfg.save_every == 0:
                    self.save(p.step, periodic=True)
                    last_save = p.step
                if cfg.patience and p.bad_evals >= cfg.patience:
                    break  # early stop: status stays ok
        finally:
            bar.close()
        if status == "ok" and last_eval != p.step:
            self.evaluate(p.step)
        if (status == "cancelled" or cfg.save_final) and last_save != p.step and (p.step > 0 or status == "ok"):
            self.save(p.step)
        if self.cfg.method == "lora" and self.main:
            self.adapter = adapter_state(self._unwrapped())
        return status

    def _end(self, t_start: float, started: bool) -> None:  # noqa: ARG002
        if not started:
            return
        p = self.progress
        steps_tok = [s["tok_s"] for s in p.steps if s.get("tok_s")]
        err = None if self.error is None else f"{type(self.error).__name__}: {self.error}"
        metrics = RunMetrics(tokens=int(p.tokens), tok_s=float(np.median(steps_tok)) if steps_tok else None,
                             peak_mem_mb=self.memory.peak_mb if self.memory is not None else _peak_mem_mb())
        self.publish(RunEnd(run=self.run_id, status=self.status, metrics=metrics, error=err))


def adamw(groups: list[dict[str, Any]], **kwargs: Any) -> Any:
    """AdamW with torch's fused kernel where the parameters' device and dtype have one (CUDA, and CPU since
    torch 2.4: one kernel for every parameter, not a loop of small ops per parameter), else the default
    implementation."""
    import torch

    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # no fused kernel for this device/dtype
        return torch.optim.AdamW(groups, **kwargs)


def _can_checkpoint(model: Any) -> bool:
    return bool(getattr(model, "supports_gradient_checkpointing", False)) and hasattr(
        model, "gradient_checkpointing_enable")


def _enable_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing (transformers >= 5 renamed the method; older ones have the alias)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _peak_mem_mb() -> float | None:
    try:
        from ..infer.metrics import peak_memory_mb

        return float(peak_memory_mb())
    except Exception:  # noqa: BLE001
        return None
