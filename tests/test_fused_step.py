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
from aigc_lab.infer import kernel_build, kernel_layers
from aigc_lab.infer.fused_step import fused_gpt2_refusal, fused_llama_refusal
from aigc_lab.models.quantize import quantize


@pytest.fixture(scope="module")
def kernel():
    if not kernel_build.built():
        pytest.fail("the CPU kernel is not built: run `make` (it builds it) before the tests")
    return kernel_build.kernels()


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
    fused, fused_cache = decode_logits(kernel_layers.twin_of(model), "fused-gpt2")
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
    fused, fused_cache = decode_logits(kernel_layers.twin_of(model), "fused-llama")
    torch.testing.assert_close(fused, full, rtol=1e-5, atol=1e-5)
    assert torch.equal(fused.argmax(-1), full.argmax(-1))
    for a, b in zip(fused_cache.layers, full_cache.layers, strict=True):
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.values, b.values, rtol=1e-5, atol=1e-5)


def test_llama_family_gates(kernel):
    """Rotary types whose frequencies change with the length, other activations: the lean step runs them."""
    dynamic = kernel_layers.twin_of(_llama_family("llama", rope_scaling={"rope_type": "dynamic", "factor": 2.0}))
    assert "changes with the length" in fused_llama_refusal(dynamic)
    gelu = kernel_layers.twin_of(_llama_family("llama", hidden_act="gelu"))
    assert "not SiLU" in fused_llama_refusal(gelu)
    plain = _llama_family("llama")
    assert fused_llama_refusal(plain) == "needs the kernel layers"
    assert fused_llama_refusal(kernel_layers.twin_of(plain)) is None


def test_int8_logits_match_torch_dynamic_quantization(kernel, gpt_tiny):
    """The int8 twin's products compute what torch's quantized::linear_dynamic computes (same input
    quantization, integer products, scaling): the same logits to float rounding."""
    q = quantize(gpt_tiny, "int8")
    full, _ = decode_logits(q.model, None)
    fused, _ = decode_logits(kernel_layers.twin_of(q.model), "fused-gpt2")
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
        product = kernel_layers.product_of(q, kernel)
        assert product is not None and (product.n_in, product.n_out) == (k, n)
        for shift in (0.0, 3.0, -3.0):
            x = torch.randn(k) + shift
            want = q(x.view(1, k)).view(-1)
            torch.testing.assert_close(product(x), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_gates(kernel):
    """Only the kernel twin of a plain GPT-2 with a product on every layer, under the lean step's conditions."""
    model = _gpt2()
    twin = kernel_layers.twin_of(model)
    assert fused_gpt2_refusal(twin) is None
    assert fused_gpt2_refusal(model) == "needs the kernel layers"  # not the twin: the lean step runs it
    relu = kernel_layers.twin_of(_gpt2(activation_function="relu"))
    assert "activation 'relu'" in fused_gpt2_refusal(relu)  # an activation it does not compute
    eager = kernel_layers.twin_of(_gpt2(attn_implementation="eager"))
    assert "not SDPA" in fused_gpt2_refusal(eager)
    hook = twin.transformer.h[1].mlp.register_forward_hook(lambda *a: None)
    assert fused_gpt2_refusal(twin) == "the model has forward hooks"  # a hook must run: keep the module calls
    hook.remove()
    mlp = twin.transformer.h[0].mlp
    mlp.c_fc = mlp.c_fc.layer  # a layer the kernel does not compute
    assert "no kernel product" in fused_gpt2_refusal(twin)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_full_cache_grows_and_the_decoder_follows(kernel, family):
    """The reserved cache holds max(capacity, 2 x prompt) = 18 positions here. When the run reaches the end of
    it, the stepper reserves twice the room and builds a decoder over the new buffers."""
    from aigc_lab.infer.fused_step import FusedStepper, gpt2_decoder, llama_decoder

    model = _gpt2() if family == "gpt2" else _llama_family("llama")
    full, _ = decode_logits(model, None, steps=30)
    real, builds = gpt2_decoder if family == "gpt2" else llama_decoder, []
    stepper = FusedStepper(kernel_layers.twin_of(model), 10, lambda m, c: builds.append(1) or real(m, c))
    logits, fused = stepper.prefill(torch.arange(9).view(1, 9), None), []
    for _ in range(30):
        logits = stepper.step([int(logits[0].argmax())])
        fused.append(logits.clone())
    torch.testing.assert_close(torch.stack(fused), full, rtol=1e-5, atol=1e-5)
    cache = stepper.cache
    assert cache.layers[0].get_seq_length() == 39 and cache.layers[0].storage[0].shape[-2] == 72
    assert len(builds) == 3  # 18, then 2 x 18 = 36, then 2 x 36 = 72 positions


@pytest.mark.parametrize("family", ["gpt2", "gpt2-int8", "llama", "qwen3"])
def test_extend_scores_several_tokens_in_one_call_like_the_full_forward(request, kernel, family):
    """Speculative verification's path: ``extend`` writes and scores several tokens per kernel call (rewinds
    between, one call past the reserved 18 positions); each kept row's logits are the full forward's for that
    token (int8 runs its rows one by one on the same products as a step: the same logits as stepping)."""
    from aigc_lab.infer.fused_step import FusedStepper, gpt2_decoder, llama_decoder

    model = {"gpt2": _gpt2, "gpt2-int8": lambda: quantize(request.getfixturevalue("gpt_tiny"), "int8").model,
             "llama": lambda: _llama_family("llama"), "qwen3": lambda: _llama_family("qwen3", head_dim=24)}[family]()
    stepper = FusedStepper(kernel_layers.twin_of(model), 10, gpt2_decoder if "gpt2" in family else llama_decoder)
    prompt = list(range(9))
    stepper.prefill(torch.tensor([prompt]), None)
    seq, got = list(prompt), []
    for chunk, keep in (([11, 12, 13], 3), ([14, 15, 16, 17], 2), ([18], 1), ([20 + i for i in range(9)], 9)):
        logits = stepper.extend(chunk)
        assert logits.shape == (len(chunk), model.config.vocab_size)
        stepper.rewind(len(chunk) - keep)
        seq += chunk[:keep]
        got.append(logits[:keep])
    assert stepper.cache.layers[0].get_seq_length() == len(seq) == 24 and stepper.capacity == 36  # it grew
    if family == "gpt2-int8":  # int8: the same rows as one step a token (whose products equal torch's, tested above)
        by_step = FusedStepper(kernel_layers.twin_of(model), 10, gpt2_decoder)
        by_step.prefill(torch.tensor([prompt]), None)
        want = [by_step.step([token])[0] for token in seq[len(prompt):]]
    else:  # fp32: the full forward's logits for each kept token
        with torch.inference_mode():
            want = list(model(torch.tensor([seq])).logits[0, len(prompt):])
    torch.testing.assert_close(torch.cat(got), torch.stack(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("penalty", [1.0, 1.3])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_greedy_proposes_in_one_call_what_stepping_and_argmax_give(kernel, family, penalty):
    """A draft's greedy proposals in one kernel call (crossing the reserved 10 positions): the same tokens as a
    step and the sampler's greedy pick per token (repetition penalty included), and the cache left as stepping
    leaves it (the next step's logits agree)."""
    from aigc_lab.infer.fused_step import FusedStepper, gpt2_decoder, llama_decoder
    from aigc_lab.infer.params import GenerationParams
    from aigc_lab.infer.sampling import shaped

    # untied: a tied random model's argmax is mostly its input token, which would hide a wrong feedback
    untied = {"tie_word_embeddings": False}
    model = kernel_layers.twin_of(_gpt2(**untied) if family == "gpt2" else _llama_family("llama", **untied))
    build = gpt2_decoder if family == "gpt2" else llama_decoder
    one_call, by_step = FusedStepper(model, 10, build), FusedStepper(model, 10, build)
    prompt = torch.tensor([list(range(7))])
    for s in (one_call, by_step):
        s.prefill(prompt, None)
    history = [*range(7), 3]
    tokens = one_call.greedy(3, 6, history, penalty)
    want, token, p = [], 3, GenerationParams(temperature=0.0, repetition_penalty=penalty)
    for _ in range(6):
        token = int(shaped(by_step.step([token]), history + want, p).argmax())
        want.append(token)
    assert tokens == want and len(set(tokens)) > 1  # a random model's argmax moves: not one token repeated
    assert one_call.cache.layers[0].get_seq_length() == by_step.cache.layers[0].get_seq_length() == 13
    torch.testing.assert_close(one_call.step([tokens[-1]]), by_step.step([tokens[-1]]), rtol=0, atol=0)


def test_same_logits_on_a_background_thread(kernel):
    """Off the main thread the products run on the kernel's own helper threads."""
    model = kernel_layers.twin_of(_gpt2(n_embd=256, n_head=4, n_layer=2, vocab_size=4000))
    here, _ = decode_logits(model, "fused-gpt2")
    there = []
    t = threading.Thread(target=lambda: there.append(decode_logits(model, "fused-gpt2")[0]))
    t.start()
    t.join(timeout=120)
    assert there and torch.equal(there[0], here)


@pytest.mark.parametrize("scheme", [None, "int8"])
@pytest.mark.parametrize("fixture", ["gpt_tiny", "llama_tiny"])
def test_the_engine_runs_on_it_and_records_the_kernel(request, kernel, fixture, scheme):
    from aigc_lab.bus import EventBus, Recorder

    base = request.getfixturevalue(fixture)
    handle = quantize(base, scheme) if scheme else base
    family = "gpt2" if fixture == "gpt_tiny" else "llama"
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    kw = dict(max_new_tokens=24, ignore_eos=True, event_bus=bus)
    fused = al.generate(handle, "Once upon a time", **kw).wait()
    config = rec[fused.run].start.config
    assert config["cpu_kernel"] is True and config["layers"] == "kernel" and config["stepper"] == f"fused-{family}"
    eager = al.generate(handle, "Once upon a time", cpu_kernel=False, **kw).wait()  # torch's own layers
    config = rec[eager.run].start.config
    assert config["cpu_kernel"] is False and config["layers"] == "torch" and config["stepper"] == f"lean-{family}"
    assert f"fused-{family}: needs the kernel layers" in config["not_chosen"]
    assert "kernel: cpu_kernel=False" in config["not_chosen"]
    assert fused.ids == eager.ids


def test_the_int8_twin_shares_torchs_packed_weights(kernel, gpt_tiny):
    """The twin of an int8 model copies no packed weight: its layers hold the same packed objects."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    q = quantize(gpt_tiny, "int8")
    twin = kernel_layers.twin_of(q.model)
    mine = [m for m in q.model.modules() if type(m) is DynamicInt8Linear]
    theirs = [m for m in twin.modules() if type(m) is DynamicInt8Linear]
    assert mine and len(mine) == len(theirs)
    assert all(a._packed_params is b._packed_params for a, b in zip(mine, theirs, strict=True))
    assert all(kernel_layers.kernel_product(m) is not None for m in twin.modules() if hasattr(m, "layer"))
    assert not any(kernel_layers.kernel_product(m) is not None for m in q.model.modules())
