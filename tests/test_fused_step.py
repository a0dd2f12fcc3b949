"""The whole-step decoders (GPT-2 and the Llama family, one kernel call a token) and the int8 kernel they use.

These need the CPU kernel, which ``make`` builds; without it they FAIL saying so, they do not skip.
"""

from __future__ import annotations

import threading

import pytest
import torch
from decode_steps import decode_logits
from transformers import GPT2Config, GPT2LMHeadModel

import aigc_lab as al
import aigc_lab.infer.decode as decode_mod
from aigc_lab.infer import cpu_gemv
from aigc_lab.infer.fused_step import fused_decoder
from aigc_lab.infer.kv_cache import reserved_cache
from aigc_lab.models.compat import cache_kwargs
from aigc_lab.models.quantize import quantize


@pytest.fixture(scope="module")
def kernel():
    if not cpu_gemv.built():
        pytest.fail("the CPU kernel is not built: run `make` (it builds it) before the tests")
    return cpu_gemv.kernels()


def _gpt2(**overrides):
    torch.manual_seed(0)
    cfg = dict(vocab_size=96, n_embd=32, n_layer=3, n_head=4, n_positions=128)
    cfg.update(overrides)
    return GPT2LMHeadModel(GPT2Config(**cfg)).eval()


@pytest.mark.parametrize("overrides", [
    {},
    {"activation_function": "gelu_pytorch_tanh"},
    {"activation_function": "gelu"},
    {"n_embd": 40, "n_head": 4, "vocab_size": 301},  # head_dim 10, widths that are no multiple of a vector
    {"n_embd": 256, "n_head": 4, "n_layer": 2, "vocab_size": 4000},  # products big enough to use both threads
])
def test_fp32_logits_and_cache_match_the_full_forward(kernel, overrides):
    model = _gpt2(**overrides)
    full, full_cache = decode_logits(model, None)
    fused, fused_cache = decode_logits(cpu_gemv.decode_model(model), fused_decoder)
    torch.testing.assert_close(fused, full, rtol=1e-5, atol=1e-5)
    assert torch.equal(fused.argmax(-1), full.argmax(-1))
    for a, b in zip(fused_cache.layers, full_cache.layers, strict=True):  # the keys/values it wrote, in place
        assert a.get_seq_length() == b.get_seq_length() == 9 + 12
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.values, b.values, rtol=1e-5, atol=1e-5)


def _llama_family(kind, **overrides):
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM),
               "qwen2": (Qwen2Config, Qwen2ForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM)}
    config_class, model_class = classes[kind]
    cfg = dict(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256)
    cfg.update(overrides)
    torch.manual_seed(0)
    return model_class(config_class(**cfg)).eval()


@pytest.mark.parametrize("kind, overrides", [
    ("llama", {}),
    ("llama", {"tie_word_embeddings": True, "attention_bias": True, "num_key_value_heads": 4,
               "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
    ("mistral", {"sliding_window": None}),
    ("qwen2", {}),  # biases on q/k/v
    ("qwen3", {"head_dim": 24}),  # per-head q/k norms; head_dim is not hidden / heads
])
def test_llama_family_logits_and_cache_match_the_full_forward(kernel, kind, overrides):
    model = _llama_family(kind, **overrides)
    full, full_cache = decode_logits(model, None)
    fused, fused_cache = decode_logits(cpu_gemv.decode_model(model), fused_decoder)
    torch.testing.assert_close(fused, full, rtol=1e-5, atol=1e-5)
    assert torch.equal(fused.argmax(-1), full.argmax(-1))
    for a, b in zip(fused_cache.layers, full_cache.layers, strict=True):
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.values, b.values, rtol=1e-5, atol=1e-5)


def test_llama_family_gates(kernel):
    """Rotary types whose frequencies change with the length, other activations: the lean step runs them."""
    dynamic = cpu_gemv.decode_model(_llama_family("llama", rope_scaling={"rope_type": "dynamic", "factor": 2.0}))
    assert fused_decoder(dynamic, _prefilled(dynamic)) is None
    gelu = cpu_gemv.decode_model(_llama_family("llama", hidden_act="gelu"))
    assert fused_decoder(gelu, _prefilled(gelu)) is None
    plain = cpu_gemv.decode_model(_llama_family("llama"))
    assert fused_decoder(plain, _prefilled(plain)) is not None


def test_int8_logits_match_torch_dynamic_quantization(kernel, gpt_tiny):
    """The int8 twin's products compute what torch's quantized::linear_dynamic computes (same input
    quantization, integer products, scaling): the same logits to float rounding."""
    q = quantize(gpt_tiny, "int8")
    full, _ = decode_logits(q.model, None)
    fused, _ = decode_logits(cpu_gemv.decode_model(q.model), fused_decoder)
    torch.testing.assert_close(fused, full, rtol=1e-4, atol=1e-4)
    assert torch.equal(fused.argmax(-1), full.argmax(-1))


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_product_equals_torch_dynamic_linear(kernel, per_channel):
    """Shapes with K below, at and off a multiple of 64 (the vector width in bytes), inputs of every sign mix."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    torch.manual_seed(0)
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    for n, k in ((5, 3), (64, 64), (33, 100), (300, 768), (7, 3000)):
        lin = torch.nn.Sequential(torch.nn.Linear(k, n))
        q = torch.ao.quantization.quantize_dynamic(lin, {torch.nn.Linear: qconfig}, dtype=torch.qint8)[0]
        product = cpu_gemv.product_of(q, kernel)
        assert product is not None and (product.n_in, product.n_out) == (k, n)
        for shift in (0.0, 3.0, -3.0):
            x = torch.randn(k) + shift
            want = q(x.view(1, k)).view(-1)
            torch.testing.assert_close(product(x), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def _prefilled(model, capacity=8):
    cache = reserved_cache(model, capacity)
    with torch.inference_mode():
        model(input_ids=torch.zeros(1, 2, dtype=torch.long), use_cache=True, **cache_kwargs(cache))
    return cache


def test_gates(kernel):
    """Only the kernel twin of a plain GPT-2 with a product on every layer, under the lean step's conditions."""
    model = _gpt2()
    twin = cpu_gemv.decode_model(model)
    assert fused_decoder(twin, _prefilled(twin)) is not None
    assert fused_decoder(twin, reserved_cache(twin, 8)) is None  # nothing reserved yet: prefill first
    assert fused_decoder(model, _prefilled(model)) is None  # not the twin: the lean step runs it
    assert fused_decoder(twin, None) is None
    relu = cpu_gemv.decode_model(_gpt2(activation_function="relu"))
    assert fused_decoder(relu, _prefilled(relu)) is None  # an activation it does not compute
    eager = cpu_gemv.decode_model(_gpt2(attn_implementation="eager"))
    assert fused_decoder(eager, _prefilled(eager)) is None
    hook = twin.transformer.h[1].mlp.register_forward_hook(lambda *a: None)
    assert fused_decoder(twin, _prefilled(twin)) is None  # a hook must run: keep the module calls
    hook.remove()
    del twin.transformer.h[0].mlp.c_fc.aigc_product  # a layer the kernel does not compute
    assert fused_decoder(twin, _prefilled(twin)) is None


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_full_cache_grows_and_the_decoder_follows(kernel, monkeypatch, family):
    """The reserved cache holds max(capacity, 2 x prompt) = 18 positions here. The token that finds it full
    goes through the lean step (the cache doubles); a decoder over the new buffers takes the rest."""
    import aigc_lab.infer.fused_step as fused_step

    model = _gpt2() if family == "gpt2" else _llama_family("llama")
    builder = "_gpt2" if family == "gpt2" else "_llama"
    real, builds = getattr(fused_step, builder), []
    monkeypatch.setattr(fused_step, builder, lambda *a: builds.append(1) or real(*a))
    full, _ = decode_logits(model, None, steps=30)
    fused, cache = decode_logits(cpu_gemv.decode_model(model), fused_decoder, steps=30, capacity=10)
    torch.testing.assert_close(fused, full, rtol=1e-5, atol=1e-5)
    assert cache.layers[0].get_seq_length() == 39 and cache.layers[0]._k.shape[-2] == 78
    assert len(builds) == 3  # 18, then 2 x 19 = 38, then 2 x 39 = 78 positions


def test_same_logits_on_a_background_thread(kernel):
    """Off the main thread the products run on the kernel's own helper threads."""
    model = cpu_gemv.decode_model(_gpt2(n_embd=256, n_head=4, n_layer=2, vocab_size=4000))
    here, _ = decode_logits(model, fused_decoder)
    there = []
    t = threading.Thread(target=lambda: there.append(decode_logits(model, fused_decoder)[0]))
    t.start()
    t.join(timeout=120)
    assert there and torch.equal(there[0], here)


@pytest.mark.parametrize("scheme", [None, "int8"])
@pytest.mark.parametrize("fixture", ["gpt_tiny", "llama_tiny"])
def test_the_engine_runs_on_it_and_records_the_kernel(request, kernel, monkeypatch, fixture, scheme):
    from aigc_lab.bus import EventBus, Recorder

    base = request.getfixturevalue(fixture)
    handle = quantize(base, scheme) if scheme else base
    made = []

    def spy(model, cache):
        step = fused_decoder(model, cache)
        made.append(step is not None)
        return step

    monkeypatch.setattr(decode_mod, "fused_decoder", spy)
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    kw = dict(max_new_tokens=24, ignore_eos=True, event_bus=bus)
    fused = al.generate(handle, "Once upon a time", **kw).wait()
    assert made == [True] and rec[fused.run].start.config["cpu_kernel"] is True
    eager = al.generate(handle, "Once upon a time", cpu_kernel=False, **kw).wait()  # torch's own layers
    assert made == [True, False] and rec[eager.run].start.config["cpu_kernel"] is False
    assert fused.ids == eager.ids


def test_the_int8_twin_shares_torchs_packed_weights(kernel, gpt_tiny):
    """The twin of an int8 model copies no packed weight: its layers hold the same packed objects."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    q = quantize(gpt_tiny, "int8")
    twin = cpu_gemv.decode_model(q.model)
    mine = [m for m in q.model.modules() if type(m) is DynamicInt8Linear]
    theirs = [m for m in twin.modules() if type(m) is DynamicInt8Linear]
    assert mine and len(mine) == len(theirs)
    assert all(a._packed_params is b._packed_params for a, b in zip(mine, theirs, strict=True))
    assert all(hasattr(m, "aigc_product") for m in theirs) and not any(hasattr(m, "aigc_product") for m in mine)
