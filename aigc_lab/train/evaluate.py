"""Evaluation: validation loss and perplexity; exact match by greedy generation for (input, target) tasks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def eval_loss(model: Any, batches: Any, device: Any, *, limit: int | None = None, autocast: Any = None) -> float:
    """Token-weighted mean loss over the validation micro-batches (the first ``limit`` of them)."""
    import contextlib

    import torch

    model.eval()
    total, count = 0.0, 0
    n = batches.per_epoch if limit is None else min(limit, batches.per_epoch)
    try:
        with torch.inference_mode():
            for m in range(n):
                batch = {k: v.to(device) for k, v in batches.batch(m).items()}
                with autocast() if autocast else contextlib.nullcontext():
                    loss = model(**batch).loss
                labels = batch["labels"]
                tokens = int((labels[:, 1:] != -100).sum()) if not _is_seq2seq(model) else int((labels != -100).sum())
                total += float(loss) * tokens
                count += tokens
    finally:
        model.train()
    return total / max(count, 1)


def _is_seq2seq(model: Any) -> bool:
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def perplexity(loss: float) -> float | None:
    return math.exp(loss) if loss < 50 else None


def greedy_outputs(model: Any, tokenizer: Any, prompts: Sequence[str], *, kind: str, max_new_tokens: int,
                   device: Any, batch_size: int = 32) -> list[str]:
    """Greedy completions of ``prompts`` (causal prompts get the ``"\\n"`` separator used in training)."""
    import torch

    outs: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left" if kind != "seq2seq" else "right"
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, len(prompts), batch_size):
                chunk = list(prompts[i:i + batch_size])
                if kind != "seq2seq":
                    chunk = [p + "\n" for p in chunk]
                enc = tokenizer(chunk, return_tensors="pt", padding=True,
                                add_special_tokens=kind == "seq2seq").to(device)
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
                if kind != "seq2seq":
                    gen = gen[:, enc["input_ids"].shape[1]:]
                outs.extend(t.split("\n")[0] for t in tokenizer.batch_decode(gen, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train()
    return outs


def exact_match(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], *, kind: str, device: Any,
                max_new_tokens: int = 32) -> float:
    """Share of pairs whose greedy output equals the target (surrounding whitespace ignored)."""
    if not pairs:
        return 0.0
    preds = greedy_outputs(model, tokenizer, [a for a, _ in pairs], kind=kind, max_new_tokens=max_new_tokens,
                           device=device)
    eos = tokenizer.eos_token or ""
    hits = sum(p.strip() == t.replace(eos, "").strip() for p, (_, t) in zip(preds, pairs, strict=True))
    return hits / len(pairs)


def chat_exact_match(model: Any, tokenizer: Any, convs: Sequence[Sequence[dict[str, str]]], *, chat_template: str,
                     max_new_tokens: int = 32, batch_size: int = 32) -> float:
    """Share of conversations whose last assistant reply the model reproduces exactly (whitespace ignored).

    Each conversation is cut before its last assistant turn and answered greedily by the engine's own decode
    loop (``al.chat``, batched), which stops on the template's end-of-turn token as in use; its events go to a
    private bus, so evaluation adds no runs to the panel.
    """
    from ..bus import EventBus
    from ..infer.chat import chat, reply
    from ..models import ModelHandle

    if not convs:
        return 0.0
    prompts, targets = [], []
    for conv in convs:
        last = max(i for i, t in enumerate(conv) if t["role"] == "assistant")
        prompts.append(list(conv[:last]))
        targets.append(conv[last]["content"].strip())
    handle = ModelHandle(model=model, tokenizer=tokenizer, name="eval", kind="causal")
    was_training = model.training
    model.eval()
    hits = 0
    try:
        for i in range(0, len(prompts), batch_size):
            streams = chat(handle, prompts[i:i + batch_size], chat_template=chat_template, event_bus=EventBus(),
                           max_new_tokens=max_new_tokens, cpu_kernel=False)
            hits += sum(reply(s) == t for s, t in zip(streams, targets[i:i + batch_size], strict=True))
    finally:
        model.train(was_training)
    return hits / len(convs)
