"""The lean GPT-2 / Llama-family decode step: the full forward's logits bit for bit, on every layer kind."""

from __future__ import annotations

import pytest
import torch
from decode_steps import decode_logits
from transformers import GPT2Config, GPT2LMHeadModel

import aigc_lab as al
from aigc_lab.infer import kernel_build, kernel_layers
from aigc_lab.infer.lean_step import gpt2_refusal, llama_refusal


def _gpt2(**overrides):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=96, n_embd=32, n_layer=3, n_head=4, n_positions=128, **overrides)
    return GPT2LMHeadModel(cfg).eval()


def _both_ways(model, steps=12):
    """Logits of ``steps`` greedy decode steps after a 9-token prompt: (full forward, lean step)."""
    lean = "lean-gpt2" if isinstance(model, GPT2LMHeadModel) else "lean-llama"
    return decode_logits(model, None, steps)[0], decode_logits(model, lean, steps)[0]


def test_same_logits_as_the_full_forward_on_torch_layers():
    full, lean = _both_ways(_gpt2())
    assert torch.equal(full, lean)


def test_same_logits_on_the_kernel_twin():
    if not kernel_build.built():
        pytest.fail("the CPU kernel is not built: run `make` (it builds it) before the tests")
    full, lean = _both_ways(kernel_layers.twin_of(_gpt2()))
    assert torch.equal(full, lean)


def test_same_logits_on_int8_dynamic_quantized_layers(gpt_tiny):
    q = al.quantize(gpt_tiny, "int8")
    full, lean = _both_ways(q.model)
    assert torch.equal(full, lean)


def _qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128)
    return Qwen2ForCausalLM(cfg).eval()


@pytest.mark.parametrize("kind", ["llama-torch", "llama-kernel", "qwen2-gqa"])
def test_same_logits_for_the_llama_family(llama_tiny, kind):
    if kind == "llama-kernel" and not kernel_build.built():
        pytest.fail("the CPU kernel is not built: run `make` (it builds it) before the tests")
    model = {"llama-torch": lambda: llama_tiny.model, "llama-kernel": lambda: kernel_layers.twin_of(llama_tiny.model),
             "qwen2-gqa": _qwen2}[kind]()
    full, lean = _both_ways(model)
    assert torch.equal(full, lean)


def test_only_where_the_equivalence_holds(llama_tiny):
    model = _gpt2()
    assert gpt2_refusal(model) is None
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    neox = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4)).eval()
    assert "not GPT2LMHeadModel" in gpt2_refusal(neox)  # not one of the families it mirrors
    assert "not one of" in llama_refusal(neox)
    llama = llama_tiny.model
    assert llama_refusal(llama) is None
    handle = llama.model.layers[0].register_forward_pre_hook(lambda *a: None)
    assert llama_refusal(llama) == "the model has forward hooks"
    handle.remove()
    model.train()
    assert gpt2_refusal(model) == "the model is in training mode (dropout)"  # dropout would differ
    model.eval()
    handle = model.transformer.h[0].mlp.register_forward_hook(lambda *a: None)
    assert gpt2_refusal(model) == "the model has forward hooks"  # hooks run only through __call__
    handle.remove()
    eager = _gpt2(attn_implementation="eager")
    assert "not SDPA" in gpt2_refusal(eager)
    odd = _gpt2(scale_attn_by_inverse_layer_idx=True)
    assert "variant" in gpt2_refusal(odd)
    mistral = _sliding_mistral()
    assert "reserved" in llama_refusal(mistral)  # sliding-window layers keep transformers' own cache


def _sliding_mistral():
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    return MistralForCausalLM(MistralConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, sliding_window=4)).eval()


@pytest.mark.parametrize("cpu_kernel", [False, None])
@pytest.mark.parametrize("fixture", ["gpt_tiny", "llama_tiny"])
def test_the_engine_decodes_single_prompts_with_it(request, cpu_kernel, fixture):
    """On the kernel both families run the whole-step decoder (fused-*); on torch's path the lean step; the plain
    forward gives the same tokens."""
    handle = request.getfixturevalue(fixture)
    family = "gpt2" if fixture == "gpt_tiny" else "llama"
    kw = dict(max_new_tokens=30, ignore_eos=True, cpu_kernel=cpu_kernel)
    stream = al.generate(handle, "Once upon a time", **kw).wait()
    assert stream.plan.stepper.name == (f"fused-{family}" if cpu_kernel is None else f"lean-{family}")
    forward = al.generate(handle, "Once upon a time", stepper="forward", **kw).wait()
    assert forward.plan.stepper.name == "forward"
    assert forward.ids == stream.ids
