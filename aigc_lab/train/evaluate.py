"""Evaluation: validation loss and perplexity; for generative tasks (pairs, conversations) exact match, chrF and
BLEU of greedy outputs from the engine's own decoder (one greedy decoder for the whole project)."""

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
    """``exp`` of a mean token NLL in nats: the one perplexity of the project (training evals and
    ``bench.text_perplexity``); None past a loss of 50, where it overflows any useful range."""
    return math.exp(loss) if loss < 50 else None


def _eval_handle(model: Any, tokenizer: Any, kind: str) -> Any:
    from ..models import ModelHandle

    return ModelHandle(model=model, tokenizer=tokenizer, name="eval", kind=kind)


def greedy_outputs(model: Any, tokenizer: Any, prompts: Sequence[str], *, kind: str, max_new_tokens: int,
                   batch_size: int = 32) -> list[str]:
    """Greedy completions of ``prompts`` by the engine's own decode loop, batched (causal prompts get the
    ``"\n"`` separator used in training, and the completion ends at the next one). Prompts are encoded as
    ``al.generate`` encodes them: the score is what a user of the fine-tuned model will see. Its events go to a
    private bus, so evaluation adds no runs to the panel."""
    from ..bus import EventBus
    from ..infer import generate

    handle = _eval_handle(model, tokenizer, kind)
    texts = list(prompts) if kind == "seq2seq" else [p + "\n" for p in prompts]
    stop = () if kind == "seq2seq" else ("\n",)
    outs: list[str] = []
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(texts), batch_size):
            streams = generate(handle, texts[i:i + batch_size], max_new_tokens=max_new_tokens, stop=stop,
                               event_bus=EventBus(), cpu_kernel=False)
            outs.extend(tokenizer.decode(s.wait().ids, skip_special_tokens=True).split("\n")[0] for s in streams)
    finally:
        model.train(was_training)
    return outs


def generation_scores(predictions: Sequence[str], targets: Sequence[str]) -> dict[str, float]:
    """Exact match (share, surrounding whitespace ignored), and sacrebleu's corpus chrF and BLEU (0-100): partial
    credit for answers that are close but not equal, which exact match cannot show early in training."""
    import sacrebleu

    preds = [p.strip() for p in predictions]
    refs = [t.strip() for t in targets]
    if not preds:
        return {"exact_match": 0.0, "chrf": 0.0, "bleu": 0.0}
    return {"exact_match": sum(p == t for p, t in zip(preds, refs, strict=True)) / len(preds),
            "chrf": float(sacrebleu.corpus_chrf(preds, [refs]).score),
            "bleu": float(sacrebleu.corpus_bleu(preds, [refs]).score)}


def pair_scores(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], *, kind: str,
                max_new_tokens: int = 32) -> dict[str, float]:
    """``generation_scores`` of the greedy outputs for (input, target) pairs."""
    if not pairs:
        return generation_scores([], [])
    preds = greedy_outputs(model, tokenizer, [a for a, _ in pairs], kind=kind, max_new_tokens=max_new_tokens)
    eos = tokenizer.eos_token or ""
    return generation_scores(preds, [t.replace(eos, "") for _, t in pairs])


def exact_match(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], *, kind: str,
                max_new_tokens: int = 32) -> float:
    """Share of pairs whose greedy output equals the target (surrounding whitespace ignored)."""
    return pair_scores(model, tokenizer, pairs, kind=kind, max_new_tokens=max_new_tokens)["exact_match"]


def chat_scores(model: Any, tokenizer: Any, convs: Sequence[Sequence[dict[str, str]]], *, chat_template: str,
                max_new_tokens: int = 32, batch_size: int = 32) -> dict[str, float]:
    """``generation_scores`` of the model's replies against each conversation's last assistant turn.

    Each conversation is cut before its last assistant turn and answered greedily by the engine's own decode
    loop (``al.chat``, batched), which stops on the template's end-of-turn token as in use; its events go to a
    private bus, so evaluation adds no runs to the panel.
    """
    from ..bus import EventBus
    from ..infer.chat import chat, reply

    prompts, targets = [], []
    for conv in convs:
        last = max(i for i, t in enumerate(conv) if t["role"] == "assistant")
        prompts.append(list(conv[:last]))
        targets.append(conv[last]["content"])
    handle = _eval_handle(model, tokenizer, "causal")
    was_training = model.training
    model.eval()
    replies: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            streams = chat(handle, prompts[i:i + batch_size], chat_template=chat_template, event_bus=EventBus(),
                           max_new_tokens=max_new_tokens, cpu_kernel=False)
            replies.extend(reply(s) for s in streams)
    finally:
        model.train(was_training)
    return generation_scores(replies, targets)


def chat_exact_match(model: Any, tokenizer: Any, convs: Sequence[Sequence[dict[str, str]]], *, chat_template: str,
                     max_new_tokens: int = 32, batch_size: int = 32) -> float:
    """Share of conversations whose last assistant reply the model reproduces exactly (whitespace ignored)."""
    return chat_scores(model, tokenizer, convs, chat_template=chat_template, max_new_tokens=max_new_tokens,
                       batch_size=batch_size)["exact_match"]
