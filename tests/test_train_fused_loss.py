"""The fused output-layer + cross-entropy loss: same loss and gradients as the model's own, used by the loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import aigc_lab as al
from aigc_lab.bus import EventBus
from aigc_lab.models import ModelHandle, train_tokenizer
from aigc_lab.train import finetune
from aigc_lab.train import fused_loss as fl
from aigc_lab.train.collate import IGNORE

CORPUS = al.data.samples.python_docs()[:12]
FAST = dict(progress=False, batch_size=4, max_length=32, save_final=False)


def _reference(h, w, b, t):
    return F.cross_entropy(F.linear(h, w, b), t)


def _grads(fn, h, w, b, t):
    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    b = b.clone().requires_grad_() if b is not None else None
    loss = fn(h, w, b, t)
    (loss * 3.0).backward()  # a non-unit upstream gradient reaches every input
    return loss.detach(), h.grad, w.grad, None if b is None else b.grad


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk", [1 << 24, 7 * 50])  # one chunk; chunks of 7 rows with a ragged last one
def test_matches_linear_then_cross_entropy(monkeypatch, bias, chunk):
    monkeypatch.setattr(fl, "CHUNK_ELEMENTS", chunk)
    torch.manual_seed(0)
    h, w, t = torch.randn(40, 16), torch.randn(50, 16), torch.randint(0, 50, (40,))
    b = torch.randn(50) if bias else None
    ours, ref = _grads(fl.linear_cross_entropy, h, w, b, t), _grads(_reference, h, w, b, t)
    for a, r in zip(ours, ref, strict=True):
        if r is None:
            assert a is None
        else:
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)


def test_a_hopeless_row_keeps_an_exact_finite_loss():
    """A target whose probability underflows fp32 (logit -200 against 0) must not give inf or a rounded log."""
    h = torch.eye(4)
    w = torch.zeros(6, 4)
    w[2, 0] = -200.0  # row 0's target (class 2) has logit -200; every other logit is 0
    t = torch.tensor([2, 1, 0, 3])
    got = fl.linear_cross_entropy(h, w, None, t)
    want = _reference(h, w, None, t)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)


def test_frozen_weight_gets_no_gradient_and_skips_its_product():
    torch.manual_seed(0)
    h, w, t = torch.randn(8, 4, requires_grad=True), torch.randn(10, 4), torch.randint(0, 10, (8,))
    fl.linear_cross_entropy(h, w, None, t).backward()
    assert h.grad is not None and w.grad is None


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, 384)


def _gpt2(tok):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    return GPT2LMHeadModel(cfg)


def _llama(tok):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


def _batch(vocab):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # a padded row: its padding is masked out of attention and loss
    labels = ids.clone()
    labels[1, 9:] = IGNORE
    labels[2, :4] = IGNORE  # an unlabelled prompt
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _loss_and_grads(model, batch, fused):
    model.zero_grad(set_to_none=True)
    loss = fl.causal_lm_loss(model, batch) if fused else model(**batch, use_cache=False).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("build", [_gpt2, _llama], ids=["gpt2-tied-head", "llama-untied-head"])
def test_causal_lm_loss_equals_the_models_own_loss_and_gradients(tok, build):
    model = build(tok)
    model.train()
    assert fl.fusable(model)
    batch = _batch(len(tok))
    with torch.random.fork_rng():
        torch.manual_seed(5)  # same dropout masks on both sides
        ref_loss, ref_grads = _loss_and_grads(model, batch, fused=False)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        loss, grads = _loss_and_grads(model, batch, fused=True)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_lora_wrapped_model_is_fusable_and_equal(tok):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_gpt2(tok), LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True))
    model.eval()
    assert fl.fusable(model)
    batch = _batch(len(tok))
    ref_loss, ref_grads = _loss_and_grads(model, batch, fused=False)
    loss, grads = _loss_and_grads(model, batch, fused=True)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and all("lora_" in n for n in grads)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-7, msg=name)


def test_not_fusable_where_the_forward_is_not_plain():
    from transformers import T5Config, T5ForConditionalGeneration

    from aigc_lab.models import LSTMConfig, LSTMForCausalLM

    t5 = T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2))
    assert not fl.fusable(t5)
    assert not fl.fusable(torch.nn.Linear(2, 2))
    assert not fl.fusable(LSTMForCausalLM(LSTMConfig(vocab_size=32)))
    patched = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=8, n_layer=1, n_head=2))
    assert fl.fusable(patched)
    patched.forward = lambda **kw: None  # the user's own forward is what training must call
    assert not fl.fusable(patched)

    class Custom(GPT2LMHeadModel):
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)

    assert not fl.fusable(Custom(patched.config))


def test_the_loop_trains_on_the_fused_loss_with_the_same_curve(tok):
    def run(**kw):
        handle = ModelHandle(_gpt2(tok), tok, "gpt2-tiny", "causal")
        return finetune(handle, CORPUS, background=False, event_bus=EventBus(), max_steps=4, **FAST, **kw)

    fused, plain = run(), run(fused_loss=False)
    assert fused._loop.fused and not plain._loop.fused
    for a, b in zip(fused.history["loss"], plain.history["loss"], strict=True):
        assert a == pytest.approx(b, rel=1e-4)
    distilled = run(method="distill", teacher=ModelHandle(_gpt2(tok), tok, "teacher", "causal"))
    assert not distilled._loop.fused  # distillation needs the logits


def test_training_runs_gpt2_gelu_as_one_fused_op_on_its_own_copy_only(tok, monkeypatch):
    from transformers.activations import NewGELUActivation

    from aigc_lab.models import fused_ops

    x = torch.randn(4, 64, requires_grad=True)
    y_ref = NewGELUActivation()(x)
    y = fused_ops.gelu_tanh(x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-6)
    calls = []
    monkeypatch.setattr(fused_ops, "gelu_tanh", lambda t: calls.append(1) or torch.nn.functional.gelu(
        t, approximate="tanh"))
    for method in ("full", "lora"):
        handle = ModelHandle(_gpt2(tok), tok, "gpt2-tiny", "causal")
        calls.clear()
        finetune(handle, CORPUS, method, background=False, event_bus=EventBus(), max_steps=1, **FAST)
        assert calls, f"{method}: the run's GELU did not go through the fused op"
        acts = [m for m in handle.model.modules() if isinstance(m, NewGELUActivation)]
        assert acts and all("forward" not in vars(m) for m in acts)  # the caller's model is untouched
