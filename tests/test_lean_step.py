"""The lean GPT-2 decode step: bit-for-bit the logits of the full forward, on every layer kind, used by the engine."""

from __future__ import annotations

import pytest
import torch
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
    ids = torch.arange(9).view(1, 9) % model.config.vocab_size
    runs = []
    for lean in (False, True):
        cache = reserved_cache(model, 9 + steps)
        with torch.inference_mode():
            out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        step = lean_decoder(model, cache) if lean else None
        if lean:
            assert step is not None
        got = []
        for _ in range(steps):
            tok = out.logits[:, -1].argmax(-1).view(1, 1)
            if step is not None:
                out = step(tok)
            else:
                with torch.inference_mode():
                    out = model(input_ids=tok, past_key_values=out.past_key_values, use_cache=True)
            got.append(out.logits[:, -1].clone())
        runs.append(torch.stack(got))
    return runs


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


def test_only_where_the_equivalence_holds(llama_tiny):
    model = _gpt2()
    assert lean_decoder(model, reserved_cache(model, 8)) is not None
    assert lean_decoder(model, None) is None  # no reserved cache: transformers' own cache classes
    from transformers.cache_utils import DynamicCache

    assert lean_decoder(model, DynamicCache(config=model.config)) is None
    assert lean_decoder(llama_tiny.model, reserved_cache(llama_tiny.model, 8)) is None
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
def test_the_engine_decodes_single_gpt2_prompts_with_it(gpt_tiny, monkeypatch, cpu_kernel):
    made = []

    def spy(model, cache):
        step = lean_decoder(model, cache)
        made.append(step is not None)
        return step

    monkeypatch.setattr(decode_mod, "lean_decoder", spy)
    kw = dict(max_new_tokens=30, ignore_eos=True, cpu_kernel=cpu_kernel)
    lean_ids = al.generate(gpt_tiny, "Once upon a time", **kw).wait().ids
    assert made == [True]
    monkeypatch.setattr(decode_mod, "lean_decoder", lambda model, cache: None)
    assert al.generate(gpt_tiny, "Once upon a time", **kw).wait().ids == lean_ids
