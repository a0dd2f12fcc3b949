"""Quantization: a new handle, the original untouched, Conv1D covered, quality kept; compare() side by side."""

from __future__ import annotations

import pytest
import torch

import aigc_lab as al
from aigc_lab.bench import greedy_agreement, mean_token_nll, text_perplexity
from aigc_lab.errors import AigcLabError, QuantizationError
from aigc_lab.models import torchao_schemes
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
    ppl, ppl_q = text_perplexity(gpt_tiny, texts), text_perplexity(q, texts)
    assert abs(ppl_q / ppl - 1) < 0.01, (ppl, ppl_q)


@pytest.mark.parametrize("scheme", ["bf16", "fp16"])
def test_half_precision_casts(gpt_tiny, scheme):
    q = al.quantize(gpt_tiny, scheme)
    assert q.dtype == {"bf16": "bfloat16", "fp16": "float16"}[scheme] and gpt_tiny.dtype == "float32"
    assert len(al.generate(q, "The", max_new_tokens=4, ignore_eos=True).wait().ids) == 4


@pytest.mark.parametrize("scheme", ["int3", "int4-weight", "float8"])
def test_unknown_or_cuda_only_schemes_raise_one_clear_error_on_cpu(gpt_tiny, scheme):
    with pytest.raises(QuantizationError, match="int8") as err:
        al.quantize(gpt_tiny, scheme)
    assert isinstance(err.value, AigcLabError) and isinstance(err.value, ValueError)
    assert scheme == "int3" or "CUDA" in str(err.value)


def test_torchao_int8_weight_runs_on_cpu(gpt_tiny):
    """torchao's Int8WeightOnlyConfig: every Linear (Conv1D converted first) holds torchao int8 weights, the
    original is untouched, quality is kept and the engine streams from it."""
    q = al.quantize(gpt_tiny, "int8-weight")
    assert q.quant == "int8-weight" and gpt_tiny.quant is None and q.params == gpt_tiny.params
    linears = [m for m in q.model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4 * 4 + 1 and {type(m.weight).__name__ for m in linears} == {"Int8Tensor"}
    assert not any(type(m.weight).__name__ == "Int8Tensor" for m in gpt_tiny.model.modules()
                   if isinstance(m, torch.nn.Linear))
    texts = al.data.samples.python_docs()[:2]
    assert abs(mean_token_nll(q, texts) / mean_token_nll(gpt_tiny, texts) - 1) < 0.01
    assert len(al.generate(q, "The", max_new_tokens=4, ignore_eos=True).wait().ids) == 4


def test_torchao_configs_are_the_current_api():
    """The configs torchao >= 0.18 takes (constructed without a GPU): int4 uses tinygemm's packing format."""
    ao = torchao_schemes.torchao_api()
    assert type(torchao_schemes.config("int8-weight")) is ao.Int8WeightOnlyConfig
    int4 = torchao_schemes.config("int4-weight", group_size=64)
    assert type(int4) is ao.Int4WeightOnlyConfig and int4.group_size == 64
    assert str(getattr(int4.int4_packing_format, "value", int4.int4_packing_format)) == "tile_packed_to_4d"
    fp8 = torchao_schemes.config("float8")
    assert type(fp8) is ao.Float8DynamicActivationFloat8WeightConfig


def _check(scheme, model, **target):
    kw = {"device": "cuda:0", "dtype": "bfloat16", "group_size": 128, "cuda_capability": (9, 0)} | target
    torchao_schemes.check(scheme, model, **kw)


def test_int4_weight_needs_bf16_weights_and_a_group_size_that_divides_every_layer():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=96, n_layer=1, n_head=4, n_positions=32))
    assert set(torchao_schemes._input_sizes(model).values()) == {96, 384}  # c_attn, c_proj, c_fc, lm_head; mlp proj
    _check("int4-weight", model, group_size=32)  # passes: on a (stated) GPU, bf16, 32 divides 96 and 384
    with pytest.raises(QuantizationError, match="bfloat16 weights.*dtype='bfloat16'"):
        _check("int4-weight", model, dtype="float32", group_size=32)
    with pytest.raises(QuantizationError, match=r"group_size must be one of \(32, 64, 128, 256\)"):
        _check("int4-weight", model, group_size=48)
    with pytest.raises(QuantizationError, match=r"group_size=64 does not divide the input size of 4 layer"):
        _check("int4-weight", model, group_size=64)


def test_float8_needs_compute_capability_8_9(gpt_tiny):
    _check("float8", gpt_tiny.model, cuda_capability=(8, 9))
    with pytest.raises(QuantizationError, match="8.9 or more.*8.0"):
        _check("float8", gpt_tiny.model, cuda_capability=(8, 0))


def test_a_missing_torchao_is_reported_with_its_import_error(gpt_tiny, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchao", None)
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    with pytest.raises(QuantizationError, match=r"ModuleNotFoundError: import of torchao halted.*aigc-lab\[quant\]"):
        al.quantize(gpt_tiny, "int8-weight")


def test_a_torchao_without_the_config_api_is_reported_by_the_name_it_lacks(gpt_tiny, monkeypatch):
    """Before 0.15 and after, the error names what failed to import, never a bare 'needs torchao'."""
    import sys
    import types

    old = types.ModuleType("torchao")
    old.quantization = types.ModuleType("torchao.quantization")
    old.quantization.int8_weight_only = lambda: None  # the removed function API
    monkeypatch.setitem(sys.modules, "torchao", old)
    monkeypatch.setitem(sys.modules, "torchao.quantization", old.quantization)
    with pytest.raises(QuantizationError, match="cannot import name 'Float8DynamicActivationFloat8WeightConfig'"):
        al.quantize(gpt_tiny, "int8-weight")


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
    run = al.finetune(model, docs[:60], method="full", max_steps=30, lr=2e-3, batch_size=8, max_length=128,
                      warmup_steps=5, save_final=False, progress=False, background=False, output_dir=tmp_path)
    trained = run.model
    held_out = [text[:2000] for text in docs[70:76]]
    ppl_before, ppl = text_perplexity(model, held_out), text_perplexity(trained, held_out)
    assert ppl < ppl_before / 3, (ppl_before, ppl)  # it did learn
    ppl_int8 = text_perplexity(al.quantize(trained, "int8"), held_out)
    change = abs(ppl_int8 / ppl - 1)
    print(f"trained starter perplexity fp32 {ppl:.2f}, int8 {ppl_int8:.2f}, change {change * 100:.2f}%")
    assert change < 0.01


def test_text_perplexity_is_exp_of_the_models_own_loss(gpt_tiny):
    """One perplexity: a comparison's is ``train.evaluate.perplexity`` of the loss the model itself computes."""
    import math

    from aigc_lab.train.evaluate import perplexity

    text = al.data.samples.python_docs()[0][:400]
    ids = gpt_tiny.tokenizer(text, return_tensors="pt", truncation=True, max_length=256)["input_ids"]
    with torch.no_grad():
        loss = float(gpt_tiny.model(input_ids=ids, labels=ids).loss)
    assert mean_token_nll(gpt_tiny, [text]) == pytest.approx(loss, rel=1e-5)
    assert text_perplexity(gpt_tiny, [text]) == pytest.approx(math.exp(loss), rel=1e-5) == perplexity(loss)
