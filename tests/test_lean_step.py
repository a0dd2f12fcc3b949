"""The lean GPT-2 / Llama-family decode step: the full forward's logits bit for bit, on every layer kind."""

from __future__ import annotations

import pytest
import torch
from decode_steps import decode_logits
from transformers import GPT2Config, GPT2LMHeadModel

import aigc_lab as al
import aigc_lab.infer.decode as decode_mod
from aigc_lab.infer import cpu_gemv
from aigc_lab.infer.kv_cache import reserved_cache
from aigc_lab.infer.lean_step import lean_decoder


def _gpt2(**overrides):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=96, n_embd=32, n_layer=3, n_head=4, n_positions=128, **overrides)
    return GPT2LMHeadModel(cfg).eval()


def _both_ways(model, steps=12):
    """Logits of ``steps`` greedy decode steps after a 9-token prompt: (full forward, lean step)."""
    return decode_logits(model, None, steps)[0], decode_logits(model, lean_decoder, steps)[0]


def test_same_logits_as_the_full_forward_on_torch_layers():
    full, lean = _both_ways(_gpt2())
    assert torch.equal(full, lean)


def test_same_logits_on_the_kernel_twin():
    if not cpu_gemv.built():
        pytest.fail("the CPU kernel is not built: run `make` (it builds it) before the tests")
    full, lean = _both_ways(cpu_gemv.decode_model(_gpt2()))
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
    if kind == "llama-kernel" and not cpu_gemv.built():
        pytest.fail("the CPU kernel is not built: run `make` (it builds it) before the tests")
    model = {"llama-torch": lambda: llama_tiny.model, "llama-kernel": lambda: cpu_gemv.decode_model(llama_tiny.model),
             "qwen2-gqa": _qwen2}[kind]()
    full, lean = _both_ways(model)
    assert torch.equal(full, lean)


def test_only_where_the_equivalence_holds(llama_tiny):
    model = _gpt2()
    assert lean_decoder(model, reserved_cache(model, 8)) is not None
    assert lean_decoder(model, None) is None  # no reserved cache: transformers' own cache classes
    from transformers.cache_utils import DynamicCache

    assert lean_decoder(model, DynamicCache(config=model.config)) is None
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    neox = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4)).eval()
    assert lean_decoder(neox, reserved_cache(neox, 8)) is None  # not one of the families it mirrors
    llama = llama_tiny.model
    assert lean_decoder(llama, reserved_cache(llama, 8)) is not None
    handle = llama.model.layers[0].register_forward_pre_hook(lambda *a: None)
    assert lean_decoder(llama, reserved_cache(llama, 8)) is None
    handle.remove()
    model.train()
    assert lean_decoder(model, reserved_cache(model, 8)) is None  # dropout would differ
    model.eval()
    handle = model.transformer.h[0].mlp.register_forward_hook(lambda *a: None)
    assert lean_decoder(model, reserved_cache(model, 8)) is None  # hooks run only through __call__
    handle.remove()
    eager = _gpt2(attn_implementation="eager")
    assert lean_decoder(eager, reserved_cache(eager, 8)) is None
    odd = _gpt2(scale_attn_by_inverse_layer_idx=True)
    assert lean_decoder(odd, reserved_cache(odd, 8)) is None


@pytest.mark.parametrize("cpu_kernel", [False, None])
@pytest.mark.parametrize("fixture", ["gpt_tiny", "llama_tiny"])
def test_the_engine_decodes_single_prompts_with_it(request, monkeypatch, cpu_kernel, fixture):
    """On the kernel both families run the whole-step decoder (infer/fused_step.py); on torch's path the lean step."""
    handle = request.getfixturevalue(fixture)
    made = []

    def spy(name, real):
        def make(model, cache):
            step = real(model, cache)
            if step is not None:
                made.append(name)
            return step
        return make

    monkeypatch.setattr(decode_mod, "lean_decoder", spy("lean", lean_decoder))
    monkeypatch.setattr(decode_mod, "fused_decoder", spy("fused", decode_mod.fused_decoder))
    kw = dict(max_new_tokens=30, ignore_eos=True, cpu_kernel=cpu_kernel)
    lean_ids = al.generate(handle, "Once upon a time", **kw).wait().ids
    assert made == (["fused"] if cpu_kernel is None else ["lean"])
    monkeypatch.setattr(decode_mod, "lean_decoder", lambda model, cache: None)
    monkeypatch.setattr(decode_mod, "fused_decoder", lambda model, cache: None)
    assert al.generate(handle, "Once upon a time", **kw).wait().ids == lean_ids
