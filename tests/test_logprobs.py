"""``generate(..., logprobs=k)``: each token's log-probability and its k most likely alternatives, exactly the
model's own distribution, on every decode path, and on the wire only when asked for."""

from __future__ import annotations

import pytest
import torch

import aigc_lab as al
from aigc_lab import events
from aigc_lab.errors import GenerationConfigError


def _reference(handle, prompt: str, generated: list[int]) -> torch.Tensor:
    """log_softmax of the model's logits at each generated position, from one full forward pass."""
    ids = handle.tokenizer(prompt, return_tensors="pt").input_ids
    full = torch.cat([ids, torch.tensor([generated])], dim=1)
    with torch.no_grad():
        logits = handle.model(full).logits[0, ids.shape[1] - 1:-1].float()
    return torch.log_softmax(logits, dim=-1)


@pytest.mark.parametrize("cpu_kernel", [False, True])
@pytest.mark.parametrize("fixture", ["gpt_tiny", "llama_tiny"])
def test_logprobs_are_the_models_own_and_the_top_k_most_likely_first(request, fixture, cpu_kernel):
    handle = request.getfixturevalue(fixture)
    stream = al.generate(handle, "Once upon a time", max_new_tokens=10, ignore_eos=True, logprobs=4,
                         cpu_kernel=cpu_kernel).wait()
    tokens = [t for t in stream.tokens if t.id is not None]
    ref = _reference(handle, "Once upon a time", [t.id for t in tokens])
    for t, row in zip(tokens, ref, strict=True):
        assert t.logprob == pytest.approx(float(row[t.id]), abs=1e-3)
        values, ids = torch.topk(row, 4)
        assert [a.id for a in t.top] == ids.tolist()
        assert [a.logprob for a in t.top] == pytest.approx(values.tolist(), abs=1e-3)
        assert t.top[0].id == t.id  # greedy picks the most likely token
        assert [a.text for a in t.top] == [handle.tokenizer.decode([a.id]) for a in t.top]


def test_sampled_tokens_report_the_untempered_distribution(gpt_tiny):
    """Temperature, top-k/p and the penalty shape the choice, not what the model believes."""
    stream = al.generate(gpt_tiny, "The", max_new_tokens=12, temperature=1.7, top_k=20, repetition_penalty=1.3,
                         seed=3, ignore_eos=True, logprobs=2).wait()
    ref = _reference(gpt_tiny, "The", stream.ids)
    got = [t.logprob for t in stream.tokens if t.id is not None]
    assert got == pytest.approx([float(row[i]) for row, i in zip(ref, stream.ids, strict=True)], abs=1e-3)
    assert any(t.top[0].id != t.id for t in stream.tokens if t.id is not None)  # sampling left the argmax


def test_each_stream_of_a_batch_gets_its_own_logprobs(gpt_tiny):
    prompts = ["Once upon a time", "def main():"]
    streams = al.generate(gpt_tiny, prompts, max_new_tokens=6, ignore_eos=True, logprobs=1)
    for prompt, stream in zip(prompts, streams, strict=True):
        stream.wait()
        ref = _reference(gpt_tiny, prompt, stream.ids)
        assert [t.logprob for t in stream.tokens] == pytest.approx(
            [float(row[i]) for row, i in zip(ref, stream.ids, strict=True)], abs=1e-3)


def test_off_by_default_and_logprobs_0_gives_no_alternatives(gpt_tiny):
    off = al.generate(gpt_tiny, "Hello", max_new_tokens=4).wait()
    assert all(t.logprob is None and t.top == () for t in off.tokens)
    item = events.to_message(off.tokens[0])["items"][0]
    assert set(item) == {"i", "id", "text", "ms"}  # nothing extra on the wire when off
    zero = al.generate(gpt_tiny, "Hello", max_new_tokens=4, ignore_eos=True, logprobs=0).wait()
    assert all(t.logprob is not None and t.logprob <= 0 and t.top == () for t in zero.tokens)


def test_logprobs_survive_the_wire_exactly(gpt_tiny):
    stream = al.generate(gpt_tiny, "Hello", max_new_tokens=5, ignore_eos=True, logprobs=3).wait()
    message = events.to_message(events.Tokens(run=stream.run, items=tuple(stream.tokens)))
    assert all(len(item["top"]) == 3 for item in message["items"])
    assert events.from_message(message).items == tuple(stream.tokens)


@pytest.mark.parametrize("bad", [-1, 21, 2.5, True, "5"])
def test_bad_logprobs_raise_one_clear_error(gpt_tiny, bad):
    with pytest.raises(GenerationConfigError, match="logprobs must be None"):
        al.generate(gpt_tiny, "Hello", logprobs=bad)
