"""Quantization: a new handle, the original untouched, Conv1D covered, quality kept; compare() side by side."""

from __future__ import annotations

import pytest
import torch

import aigc_lab as al
from aigc_lab.bench import greedy_agreement, perplexity
from aigc_lab.errors import AigcLabError
from aigc_lab.models.quantize import conv1d_to_linear


def test_conv1d_to_linear_is_exact(gpt_tiny):
    import copy

    model = copy.deepcopy(gpt_tiny.model)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    before = model(input_ids=ids).logits
    assert conv1d_to_linear(model) == 4 * 4  # c_attn, c_proj, c_fc, mlp.c_proj per block
    after = model(input_ids=ids).logits
    torch.testing.assert_close(before, after, rtol=1e-5, atol=1e-5)


def test_int8_is_a_new_handle_and_the_original_is_untouched(gpt_tiny):
    state = {k: v.clone() for k, v in gpt_tiny.model.state_dict().items()}
    q = al.quantize(gpt_tiny, "int8")
    assert q is not gpt_tiny and q.quant == "int8" and gpt_tiny.quant is None
    assert q.info().quant == "int8"
    for k, v in gpt_tiny.model.state_dict().items():
        assert torch.equal(v, state[k]), k
    dyn = torch.ao.nn.quantized.dynamic.Linear
    assert sum(isinstance(m, dyn) for m in q.model.modules()) == 4 * 4 + 1  # every projection + lm_head
    assert not any(type(m) is torch.nn.Linear for m in q.model.modules())


def test_int8_keeps_quality_on_the_reference_text(gpt_tiny):
    q = al.quantize(gpt_tiny, "int8")
    texts = al.data.samples.python_docs()[:4]
    ppl, ppl_q = perplexity(gpt_tiny, texts), perplexity(q, texts)
    assert abs(ppl_q / ppl - 1) < 0.01, (ppl, ppl_q)


@pytest.mark.parametrize("scheme", ["bf16", "fp16"])
def test_half_precision_casts(gpt_tiny, scheme):
    q = al.quantize(gpt_tiny, scheme)
    assert q.dtype == {"bf16": "bfloat16", "fp16": "float16"}[scheme] and gpt_tiny.dtype == "float32"
    assert len(al.generate(q, "The", max_new_tokens=4, ignore_eos=True).wait().ids) == 4


@pytest.mark.parametrize("scheme", ["int3", "int4-weight"])
def test_unknown_or_unavailable_schemes_raise_one_clear_error(gpt_tiny, scheme):
    with pytest.raises(AigcLabError, match="int8"):
        al.quantize(gpt_tiny, scheme)


def test_greedy_agreement():
    assert greedy_agreement([1, 2, 3, 4], [1, 2, 9, 4]) == 0.75
    assert greedy_agreement([1, 2], [1, 2, 3, 4]) == 0.5
    assert greedy_agreement([], []) == 1.0


def test_compare_reports_speed_and_quality_side_by_side(gpt_tiny):
    q = al.quantize(gpt_tiny, "int8")
    table = al.compare([gpt_tiny, q], prompts=["The interpreter", "A class"], max_new_tokens=8,
                       ppl_texts=al.data.samples.python_docs()[:2])
    assert list(table["quant"]) == ["-", "int8"]
    assert table.loc[0, "greedy_agreement"] == 1.0 and 0 <= table.loc[1, "greedy_agreement"] <= 1
    assert (table["ttft_ms"] > 0).all() and (table["tok_s"] > 0).all() and table.loc[0, "speedup"] == 1.0
    assert table.loc[0, "ppl_change_pct"] == 0.0


def test_a_quantized_handle_still_counts_every_parameter(gpt_tiny):
    assert al.quantize(gpt_tiny, "int8").params == gpt_tiny.params


def test_int8_changes_perplexity_of_a_trained_starter_by_less_than_one_percent(tmp_path):
    """Quantization error matters once weights carry signal: train a starter briefly, then compare."""
    docs = al.data.samples.python_docs()
    model = al.models.load("starter:gpt-tiny")
    run = al.finetune(model, docs[:60], method="full", max_steps=60, lr=2e-3, batch_size=8, max_length=128,
                      warmup_steps=5, save_final=False, progress=False, background=False, output_dir=tmp_path)
    trained = run.model
    held_out = [text[:2000] for text in docs[70:76]]
    ppl_before, ppl = perplexity(model, held_out), perplexity(trained, held_out)
    assert ppl < ppl_before / 3, (ppl_before, ppl)  # it did learn
    ppl_int8 = perplexity(al.quantize(trained, "int8"), held_out)
    change = abs(ppl_int8 / ppl - 1)
    print(f"trained starter perplexity fp32 {ppl:.2f}, int8 {ppl_int8:.2f}, change {change * 100:.2f}%")
    assert change < 0.01
