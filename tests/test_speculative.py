"""Speculative decoding: the target's greedy output exactly, on every stepper that can drive it, with a model
draft or prompt lookup; sampling with the target's distribution (a statistical test with fixed seeds); counts
in ``run.end``; clear errors for what it cannot do. Needs the CPU kernel (``make`` builds it)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import aigc_lab as al
from aigc_lab.bus import EventBus, Recorder
from aigc_lab.errors import GenerationConfigError
from aigc_lab.infer import STEPPERS, kernel_build
from aigc_lab.infer.speculative import rewindable
from aigc_lab.infer.stepper import DecodeRequest

PROMPT = "Once upon a time there was a"


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if not kernel_build.built():
        pytest.fail("the CPU kernel is not built: run `make` (it builds it) before the tests")


def _small_like(handle, seed=1):
    """A smaller random model of the same family on the same tokenizer: a draft that is often wrong."""
    torch.manual_seed(seed)
    tok = handle.tokenizer
    if isinstance(handle.model, GPT2LMHeadModel):
        cfg = handle.model.config
        model = GPT2LMHeadModel(GPT2Config(vocab_size=cfg.vocab_size, n_embd=32, n_layer=1, n_head=2,
                                           n_positions=cfg.n_positions)).eval()
    else:
        cfg = handle.model.config
        model = LlamaForCausalLM(LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                             max_position_embeddings=512)).eval()
    return al.models.ModelHandle(model, tok, "draft-small", "causal")


@pytest.mark.parametrize("fixture", ["gpt_tiny", "llama_tiny"])
def test_greedy_output_is_the_targets_on_every_stepper_that_can_drive_it(request, fixture):
    target = request.getfixturevalue(fixture)
    wrong, right = _small_like(target), target
    ran = set()
    for cpu_kernel in (None, False):
        from aigc_lab.infer.backends import plan

        chosen = plan(target, DecodeRequest(cpu_kernel=cpu_kernel))
        names = [e.name for e in STEPPERS if rewindable(e.name)
                 and e.refusal(target, chosen.layers.model, DecodeRequest(cpu_kernel=cpu_kernel)) is None]
        for name in names:
            kw = dict(max_new_tokens=40, ignore_eos=True, cpu_kernel=cpu_kernel, stepper=name)
            alone = al.generate(target, PROMPT, **kw).wait().ids
            # a draft mostly refused (k=1 and 3), one always accepted (3, and "auto" growing k), prompt lookup
            for draft, k in ((wrong, 1), (wrong, 3), (right, 3), (right, "auto"), ("prompt", 3)):
                got = al.generate(target, PROMPT, draft=draft, num_draft_tokens=k, **kw).wait()
                label = draft if isinstance(draft, str) else draft.name
                assert got.ids == alone, f"{name} on {chosen.layers.name}, draft {label}, k={k}"
                assert got.plan.stepper.name == name
            ran.add(name)
    family = "gpt2" if fixture == "gpt_tiny" else "llama"
    assert {f"fused-{family}", f"lean-{family}", "forward"} <= ran


def test_int8_target_and_a_long_run_past_the_reserved_cache(gpt_tiny):
    q = al.quantize(gpt_tiny, "int8")
    alone = al.generate(q, "A", max_new_tokens=300, ignore_eos=True).wait().ids
    got = al.generate(q, "A", max_new_tokens=300, ignore_eos=True, draft=gpt_tiny, num_draft_tokens="auto").wait()
    assert got.ids == alone


def test_run_end_reports_acceptance_and_tokens_per_target_step(gpt_tiny):
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    same = al.generate(gpt_tiny, PROMPT, max_new_tokens=30, ignore_eos=True, draft=gpt_tiny, num_draft_tokens=4,
                       event_bus=bus).wait()
    m = rec[same.run].end.metrics
    assert m.draft_acceptance == 1.0 and m.tokens_per_step == pytest.approx(5.0)  # 4 accepted + 1 per forward
    assert sum(t.draft for t in same.tokens) == 24 and rec[same.run].start.config["draft"] == "starter:gpt-tiny"
    wrong = al.generate(gpt_tiny, PROMPT, max_new_tokens=30, ignore_eos=True, draft=_small_like(gpt_tiny),
                        num_draft_tokens=4, event_bus=bus).wait()
    m = rec[wrong.run].end.metrics
    assert 0.0 <= m.draft_acceptance < 1.0 and 1.0 <= m.tokens_per_step < 5.0
    plain = al.generate(gpt_tiny, PROMPT, max_new_tokens=5, event_bus=bus).wait()
    assert rec[plain.run].end.metrics.draft_acceptance is None
    from aigc_lab.events import to_message

    assert "draft_acceptance" not in to_message(rec[plain.run].end)["metrics"]  # additive: only speculative runs
    assert to_message(rec[same.run].end)["metrics"]["tokens_per_step"] == pytest.approx(5.0)


def _first_token_distribution(handle, prompt, p):
    ids = handle.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = handle.model(ids).logits[0, -1].float() / p["temperature"]
    kth = torch.topk(logits, p["top_k"]).values[-1]
    return torch.softmax(logits.masked_fill(logits < kth, float("-inf")), -1)


def test_sampling_keeps_the_targets_distribution(llama_tiny):
    """Over 600 seeds the first token's frequencies match the target's own distribution (total variation
    < 0.1), with a draft whose distribution is > 0.4 away (so rejections and residual samples happen)."""
    draft = _small_like(llama_tiny, seed=3)
    p = dict(temperature=1.0, top_k=6)
    want = _first_token_distribution(llama_tiny, "The", p)
    q = _first_token_distribution(draft, "The", p)
    assert 0.5 * float((want - q).abs().sum()) > 0.4  # the draft alone would be far off
    counts = torch.zeros_like(want)
    n = 600
    for seed in range(n):
        s = al.generate(llama_tiny, "The", max_new_tokens=1, draft=draft, num_draft_tokens=3, seed=seed,
                        event_bus=EventBus(), **p).wait()
        counts[s.ids[0]] += 1
    tv = 0.5 * float((counts / n - want).abs().sum())
    assert tv < 0.1, f"total variation {tv:.3f} from the target's distribution"


def test_what_it_cannot_do_is_refused_clearly(gpt_tiny, llama_tiny):
    with pytest.raises(GenerationConfigError, match="must share the target's tokenizer"):
        al.generate(gpt_tiny, PROMPT, draft=llama_tiny)
    with pytest.raises(GenerationConfigError, match="one prompt of a causal model"):
        al.generate(gpt_tiny, [PROMPT, "b"], draft="prompt")
    with pytest.raises(GenerationConfigError, match="one prompt of a causal model"):
        al.generate(gpt_tiny, PROMPT, draft="prompt", stepper="batch") if False else al.generate(
            al.models.ModelHandle(gpt_tiny.model, gpt_tiny.tokenizer, "as-rnn", "rnn"), PROMPT, draft="prompt")
    with pytest.raises(GenerationConfigError, match="num_draft_tokens"):
        al.generate(gpt_tiny, PROMPT, draft="prompt", num_draft_tokens=0)


def test_compare_puts_a_model_and_its_speculative_use_in_one_table(gpt_tiny):
    table = al.compare([gpt_tiny, al.bench.Variant(gpt_tiny, draft="prompt"),
                        al.bench.Variant(gpt_tiny, label="self-drafted", draft=gpt_tiny, num_draft_tokens=3)],
                       ["Once upon a time"], max_new_tokens=12, event_bus=EventBus())
    assert table["model"].tolist() == ["starter:gpt-tiny", "starter:gpt-tiny + draft prompt", "self-drafted"]
    assert table["greedy_agreement"].tolist() == [1.0, 1.0, 1.0]  # speculative greedy output is the target's
    assert pd_isna(table["draft_acceptance"].iloc[0]) and table["draft_acceptance"].iloc[2] == 1.0


def pd_isna(x):
    import pandas as pd

    return bool(pd.isna(x))
