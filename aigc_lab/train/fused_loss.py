"""Causal-LM loss with the output layer and cross-entropy fused: less work per step than the model's own loss.

A causal LM's own loss computes ``logits = hidden @ W.T`` for every position, then ``log_softmax`` and its
backward over the whole ``[tokens, vocab]`` matrix: on a large vocabulary those passes are a noticeable share
of a small model's training step on a CPU (figures in benchmarks/RESULTS.md). Here the forward computes the
loss *and* its gradients in one go, reusing one logits buffer per chunk of rows (max, exp, sum, scale: the
softmax becomes the gradient in place), and skips rows whose label is ignored (padding, the last position).
The backward then only scales the saved gradients. The matrix products are the same three as the unfused path
(logits, grad of hidden, grad of ``W``), so the result equals the model's loss to float rounding.

``causal_lm_loss(model, batch)`` returns that loss for the architectures whose forward is exactly
"base model -> output layer -> shifted cross-entropy" (``FUSABLE``, with transformers' own ``forward``);
``fusable(model)`` says whether a model is one of them. Anything else keeps ``model(**batch).loss``.
"""

from __future__ import annotations

import functools
from typing import Any

from .collate import IGNORE

CHUNK_ELEMENTS = 1 << 24  # logits held at once (64 MiB of fp32), whatever the vocabulary: rows = this / vocab
TINY = 1e-30  # below this a probability's log loses precision: such rows' losses are recomputed exactly

# model_type values whose ``*ForCausalLM.forward`` is base model -> lm_head (no softcap, scale or bias tricks)
FUSABLE = frozenset({"gpt2", "llama", "mistral", "qwen2", "qwen3", "gpt_neox"})


def _torch() -> Any:
    import torch

    return torch


def _softmax_(x: Any) -> None:
    """Row softmax of a 2-D float tensor, in place: one fused pass, not one per max/sub/exp/sum/div op."""
    torch = _torch()
    try:
        torch.ops.aten._softmax.out(x, 1, False, out=x)
    except (RuntimeError, AttributeError):  # an aten without the out= overload
        x.copy_(torch.softmax(x, dim=1))


@functools.cache
def _function() -> Any:
    """The autograd function, built on first use so that importing this module does not import torch."""
    torch = _torch()

    class LinearCrossEntropy(torch.autograd.Function):
        """Mean cross-entropy of ``hidden @ weight.T (+ bias)`` against ``target``; gradients made in forward."""

        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, bias: Any, target: Any) -> Any:  # noqa: ANN401
            n, vocab = hidden.shape[0], weight.shape[0]
            step = max(16, min(n, CHUNK_ELEMENTS // vocab))
            need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            need_b = bias is not None and ctx.needs_input_grad[2]
            grad_h = torch.empty_like(hidden) if need_h else None
            grad_w = torch.empty_like(weight) if need_w else None
            grad_b = torch.empty_like(bias) if need_b else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            rows = torch.arange(min(n, step), device=hidden.device)
            for lo in range(0, n, step):
                h, t = hidden[lo:lo + step], target[lo:lo + step]
                r = rows[:h.shape[0]]
                logits = (torch.addmm(bias, h, weight.t()) if bias is not None else h @ weight.t()).float()
                _softmax_(logits)
                picked = logits[r, t]
                losses = -picked.log()
                low = picked < TINY  # the log of an underflowed probability: recompute those rows exactly
                if bool(low.any()):
                    z = torch.addmm(bias, h[low], weight.t()) if bias is not None else h[low] @ weight.t()
                    z = z.float()
                    losses[low] = torch.logsumexp(z, dim=1) - z[torch.arange(z.shape[0]), t[low]]
                total += losses.sum()
                logits[r, t] -= 1.0  # softmax minus one-hot: d(sum of losses)/d(logits)
                g = logits.to(hidden.dtype)
                if grad_h is not None:
                    torch.mm(g, weight, out=grad_h[lo:lo + step])
                if grad_w is not None:
                    if lo == 0:
                        torch.mm(g.t(), h, out=grad_w)
                    else:
                        grad_w.addmm_(g.t(), h)
                if grad_b is not None:
                    if lo == 0:
                        torch.sum(g, dim=0, out=grad_b)
                    else:
                        grad_b += g.sum(dim=0)
            ctx.n = n
            ctx.save_for_backward(*(x for x in (grad_h, grad_w, grad_b) if x is not None))
            ctx.has = (grad_h is not None, grad_w is not None, grad_b is not None)
            return total / max(n, 1)

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> Any:  # noqa: ANN401
            saved = iter(ctx.saved_tensors)
            scale = grad_out / max(ctx.n, 1)
            grads = [next(saved).mul_(scale) if has else None for has in ctx.has]
            return grads[0], grads[1], grads[2], None

    return LinearCrossEntropy


def linear_cross_entropy(hidden: Any, weight: Any, bias: Any, target: Any) -> Any:
    """Mean cross-entropy of ``hidden @ weight.T + bias`` (rows ``[n, d]``) against class ids ``target[n]``."""
    return _function().apply(hidden, weight, bias, target)


def _inner(model: Any) -> Any:
    """The transformers model under a peft wrapper (LoRA layers stay injected), or the model itself."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def fusable(model: Any) -> bool:
    """True when ``model``'s training loss can be computed by ``causal_lm_loss`` with the same result."""
    torch = _torch()
    inner = _inner(model)
    cfg = getattr(inner, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in FUSABLE or getattr(cfg, "is_encoder_decoder", False):
        return False
    # the forward this loss stands for: transformers' own, not a subclass's or an instance's replacement
    own = getattr(type(inner).forward, "__module__", "").startswith("transformers.models.")
    if not own or "forward" in vars(inner) or "forward" in vars(model):
        return False
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    base = getattr(inner, "base_model", None)
    return type(head) is torch.nn.Linear and base is not None and base is not inner


def causal_lm_loss(model: Any, batch: dict[str, Any]) -> Any:
    """The shifted next-token loss of a ``fusable`` model on ``batch`` (``input_ids``, ``labels``, optional
    ``attention_mask``): mean over labelled positions, as ``model(**batch).loss``."""
    inner = _inner(model)
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = inner.base_model(**inputs, use_cache=False).last_hidden_state
    target = labels[:, 1:]
    keep = target != IGNORE
    head = inner.get_output_embeddings()
    return linear_cross_entropy(hidden[:, :-1][keep], head.weight, head.bias, target[keep])
