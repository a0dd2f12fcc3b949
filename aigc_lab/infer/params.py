"""Decoding parameters, validated once, so the decode loop never meets a bad value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import GenerationConfigError

MAX_DRAFT_TOKENS = 16  # speculative decoding's proposals per round at most
MAX_LOGPROBS = 20  # alternatives per token (vLLM's default cap): each is sent to the panel with the token


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings. ``temperature=0`` means greedy; ``seed`` makes sampling reproducible."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()  # ids that end the run besides the end ids (al.chat: the end-of-turn token)
    seed: int | None = None
    ignore_eos: bool = False  # keep going past the end-of-text token (benchmarks, fixed-length outputs)
    # record each token's log-probability and its k most likely alternatives (None = off; 0 = the token's own)
    logprobs: int | None = None
    # single-prompt CPU decoding on the C++ kernel (infer/layers.py): None = when it is already built, True = build
    # it if needed, False = torch's path. A run's config records what actually ran (layers, stepper).
    cpu_kernel: bool | None = None
    # run this stepper of infer/backends.py's registry (its name), or fail saying why it cannot; None = the first
    # that applies. For tests and comparisons: the default is always the fastest that applies.
    stepper: str | None = None
    # speculative decoding (generate's ``draft=``): proposals per target forward, or "auto" (adapted each round)
    num_draft_tokens: int | str = 4

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
        if not all(isinstance(i, int) and i >= 0 for i in self.stop_token_ids):
            problems.append("stop_token_ids must be non-negative token ids")
        if self.logprobs is not None and not (type(self.logprobs) is int and 0 <= self.logprobs <= MAX_LOGPROBS):
            problems.append(f"logprobs must be None (off) or an integer from 0 to {MAX_LOGPROBS}")
        if self.num_draft_tokens != "auto" and not (type(self.num_draft_tokens) is int
                                                    and 1 <= self.num_draft_tokens <= MAX_DRAFT_TOKENS):
            problems.append(f"num_draft_tokens must be \"auto\" or an integer from 1 to {MAX_DRAFT_TOKENS}")
        if problems:
            raise GenerationConfigError("; ".join(problems))


def stop_ids(handle: Any, params: GenerationParams) -> frozenset[int]:
    """Ids that end a sequence: the tokenizer's end id, every id of the model's ``generation_config.eos_token_id``
    (an int or a list: Llama-3 ends turns with ``<|eot_id|>``, Qwen with ``<|im_end|>``, where transformers'
    ``generate`` stops) and ``params.stop_token_ids``; none with ``ignore_eos``."""
    if params.ignore_eos:
        return frozenset()
    ids = set(params.stop_token_ids)
    eos = handle.tokenizer.eos_token_id
    if eos is not None:
        ids.add(int(eos))
    config = getattr(handle.model, "generation_config", None)
    listed = getattr(config, "eos_token_id", None)
    ids.update([listed] if isinstance(listed, int) else list(listed or ()))
    return frozenset(int(i) for i in ids)
