"""Speculative decoding: a draft proposes k tokens, the target checks them all in one forward.

``generate(target, prompt, draft=small_model)`` (a model sharing the target's tokenizer) or ``draft="prompt"``
(prompt lookup: the continuation of the latest earlier occurrence of the last n-gram, no second model). Each
round the draft proposes ``num_draft_tokens`` tokens (``"auto"``: two more after a round where all were
accepted, one fewer otherwise), the target runs them in one forward (``Rewindable.extend``), and:

* greedy: a proposal is kept while it equals the target's own argmax; the first that differs is replaced by
  the target's token. The output is the target's greedy output, token for token.
* sampling: proposal d is kept with probability min(1, p(d) / q(d)) (p the target's distribution, q the
  draft's, both after penalty, temperature, top-k/p); the first rejected one is replaced by a sample of
  max(0, p - q), renormalised (Leviathan et al. 2023): the output has the target's distribution exactly.

When every proposal is kept, the target's next row gives one more token for free. Both caches are rewound past
the rejected tokens. ``run.end`` reports the share of proposals accepted and tokens per target forward; tokens
that came from the draft carry ``draft=True`` (the panel marks them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import GenerationConfigError
from .decode import RESERVE_MAX, Output, guarded, outputs
from .params import MAX_DRAFT_TOKENS as MAX_DRAFT
from .sampling import pick, probabilities, shaped

MAX_NGRAM = 3  # prompt lookup matches the last 3, 2, then 1 tokens


class ModelDraft:
    """A smaller model sharing the target's tokenizer, decoding on its own stepper."""

    def __init__(self, handle: Any, plan: Any) -> None:
        self.handle, self.plan = handle, plan
        self.label = handle.name
        self.stepper: Any = None
        self.seen = 0  # tokens of the sequence the draft's cache holds
        self.logits: Any = None  # its next-token logits after ``seen`` tokens

    def start(self, ids: Any, capacity: int) -> None:
        self.stepper = self.plan.stepper.build(self.plan.layers.model, capacity)
        self.logits = self.stepper.prefill(ids, None)
        self.seen = ids.shape[1]

    def propose(self, sequence: list[int], k: int, out: Output, gen: Any) -> tuple[list[int], list[Any]]:
        """k tokens after ``sequence`` and the distribution each was drawn from (None when greedy)."""
        p = out.p
        if p.temperature == 0 and hasattr(self.stepper, "greedy"):
            return self._greedy(sequence, k, out), [None] * k
        for token in sequence[self.seen:]:  # catch up on what the target emitted since the last round
            self.logits = self.stepper.step([token])
        self.seen = len(sequence)
        history = list(out.history)
        tokens: list[int] = []
        dists: list[Any] = []
        for i in range(k):
            if p.temperature == 0:
                token, dist = int(shaped(self.logits, history, p).argmax()), None
            else:
                dist = probabilities(self.logits, history, p)
                token = int(dist.multinomial(1, generator=gen))
            tokens.append(token)
            dists.append(dist)
            history.append(token)
            if i + 1 < k:
                self.logits = self.stepper.step([token])
                self.seen += 1
        return tokens, dists

    def _greedy(self, sequence: list[int], k: int, out: Output) -> list[int]:
        """Greedy proposals on a kernel stepper, the whole loop (the catch-up's last token, then k - 1 guesses) in
        one kernel call, the repetition penalty applied there (greedy picks see nothing else of the sampler)."""
        catch_up = sequence[self.seen:]
        for token in catch_up[:-1]:
            self.stepper.step([token])
        penalty = out.p.repetition_penalty
        if catch_up:
            tokens = self.stepper.greedy(catch_up[-1], k, list(out.history), penalty)
        else:  # right after the prompt, whose forward gave the first row
            first = int(shaped(self.logits, list(out.history), out.p).argmax())
            rest = self.stepper.greedy(first, k - 1, [*out.history, first], penalty) if k > 1 else []
            tokens = [first, *rest]
        self.logits = None  # the kernel kept the last row to itself: the next round catches up first
        self.seen = len(sequence) + k - 1
        return tokens

    def keep(self, length: int) -> None:
        """Only the first ``length`` tokens of the sequence stand: forget the rejected guesses after them. (The
        next ``propose`` catches up from there, which recomputes the logits.)"""
        if self.seen > length:
            self.stepper.rewind(self.seen - length)
            self.seen = length


class PromptLookupDraft:
    """Proposals copied from the sequence itself: what followed the latest earlier occurrence of its last n-gram."""

    label = "prompt"

    def start(self, ids: Any, capacity: int) -> None:
        pass

    def propose(self, sequence: list[int], k: int, out: Output, gen: Any) -> tuple[list[int], list[Any]]:
        for n in range(min(MAX_NGRAM, len(sequence) - 1), 0, -1):
            tail = sequence[-n:]
            for start in range(len(sequence) - n - 1, -1, -1):
                if sequence[start:start + n] == tail:
                    found = sequence[start + n:start + n + k]
                    return found, [None] * len(found)  # a point mass: q(d) = 1
        return [], []

    def keep(self, length: int) -> None:
        pass


def draft_of(draft: Any, target: Any, cpu_kernel: bool | None) -> Any:
    """The draft source for ``generate(..., draft=...)``: ``"prompt"``, or a model (handle or name) that shares
    the target's tokenizer."""
    from ..models import ModelHandle, load
    from .backends import plan
    from .stepper import DecodeRequest

    if draft == "prompt":
        return PromptLookupDraft()
    handle = draft if isinstance(draft, ModelHandle) else load(draft)
    if handle.kind == "seq2seq":
        raise GenerationConfigError("the draft must be a causal language model")
    if handle.tokenizer.get_vocab() != target.tokenizer.get_vocab():
        raise GenerationConfigError(f"the draft {handle.name!r} must share the target's tokenizer "
                                    f"({target.name!r}): its token ids mean other text")
    chosen = plan(handle, DecodeRequest(batch=1, cpu_kernel=cpu_kernel))
    if not rewindable(chosen.stepper.name):
        raise GenerationConfigError(f"the draft {handle.name!r} runs on the {chosen.stepper.name!r} stepper, which "
                                    "cannot rewind its cache (recurrent or batched)")
    return ModelDraft(handle, chosen)


def rewindable(stepper_name: str) -> bool:
    """Whether the registry entry ``stepper_name`` builds steppers speculative decoding can drive."""
    return stepper_name in ("fused-gpt2", "fused-llama", "lean-gpt2", "lean-llama", "forward")


def speculative_decode(stream: Any, handle: Any, plan: Any, draft: Any) -> Iterator[None]:
    """One stream on ``plan``'s (rewindable) stepper with ``draft`` proposing; yields once per target forward."""
    return guarded([stream], _speculate(stream, handle, plan, draft))


def _speculate(stream: Any, handle: Any, plan: Any, draft: Any) -> Iterator[None]:
    import torch

    p = stream.params
    model = plan.layers.model
    (out,), ids, _, budget = outputs([stream], handle, model)
    gen = torch.Generator(device="cpu").manual_seed(p.seed) if p.seed is not None else None
    capacity = ids.shape[1] + min(budget + MAX_DRAFT + 1, RESERVE_MAX)
    target = plan.stepper.build(model, capacity)
    if not getattr(target, "rewindable", True):
        raise GenerationConfigError("speculative decoding needs one sequence in the engine's reserved cache")
    draft.start(ids, capacity)
    # the prompt and every emitted token; the target's cache holds all but ``pending`` (the last emitted one,
    # which the next round's forward reads together with the new guesses: one target forward per round)
    sequence = list(out.history)
    k = 4 if p.num_draft_tokens == "auto" else int(p.num_draft_tokens)
    stats = stream.speculation = {"draft": draft.label, "proposed": 0, "accepted": 0, "target_steps": 0}
    emitted = 0
    logits: Any = target.prefill(ids, None)  # after the prompt: the row for the first token
    pending: list[int] = []
    while True:
        if stream._cancel_flag.is_set():
            out.end("cancelled")
            break
        room = budget - emitted
        start = len(sequence)
        guesses, dists = draft.propose(sequence, min(k, room - 1), out, gen) if room > 1 else ([], [])
        # rows[j]: the target's logits for the token after sequence + guesses[:j]; the last, after every guess
        if pending:
            rows = target.extend(pending + guesses) if guesses else target.step(pending)
            stats["target_steps"] += 1
        else:  # the first round: the prompt's forward gave the first row
            rows = torch.cat([logits, target.extend(guesses)]) if guesses else logits
            stats["target_steps"] += bool(guesses)
        stats["proposed"] += len(guesses)
        taken, ended = 0, False
        for j, guess in enumerate(guesses):
            row = rows[j:j + 1]
            if p.temperature == 0:
                ok = int(shaped(row, out.history, p).argmax()) == guess
            else:
                q = 1.0 if dists[j] is None else float(dists[j][guess])
                ratio = float(probabilities(row, out.history, p)[guess]) / max(q, 1e-30)
                ok = float(torch.rand(1, generator=gen)) < min(1.0, ratio)
            if not ok:
                break
            taken += 1
            stats["accepted"] += 1
            sequence.append(guess)
            emitted += 1
            ended = out.push(guess, row, draft=True)
            if ended:
                break
        if not ended:  # the target's own next token: a correction of the first refused guess, or one more
            row = rows[taken:taken + 1]
            if taken < len(guesses):
                nid = _correction(row, out, p, dists[taken], guesses[taken], gen)
            else:
                nid = pick(row, out.history, p, gen)
            sequence.append(nid)
            emitted += 1
            ended = out.push(nid, row)
        yield None
        if ended or emitted >= budget:
            break
        target.rewind(len(guesses) - taken)  # the cache keeps the accepted guesses, not the refused ones
        draft.keep(start + taken)
        pending = [sequence[-1]]
        if p.num_draft_tokens == "auto" and guesses:
            k = min(MAX_DRAFT, k + 2) if taken == len(guesses) else max(1, k - 1)
    out.end("ok")


def _correction(row: Any, out: Output, p: Any, dist: Any, rejected: int, gen: Any) -> int:
    """The target's token where the draft's ``rejected`` guess was refused: its argmax (greedy), else a sample
    of max(0, p - q) renormalised (q a point mass on the guess for prompt lookup)."""
    import torch

    if p.temperature == 0:
        return int(shaped(row, out.history, p).argmax())
    target_p = probabilities(row, out.history, p)
    if dist is None:
        residual = target_p.clone()
        residual[rejected] = 0.0
    else:
        residual = (target_p - dist).clamp_min(0.0)
    total = float(residual.sum())
    if total <= 0.0:  # p <= q everywhere: only where p == q, then any sample of p is right
        residual = target_p
    return int(torch.multinomial(residual, 1, generator=gen))
