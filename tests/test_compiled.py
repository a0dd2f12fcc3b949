"""The opt-in compiled decode path: same tokens as eager, compile cost measured once and reported."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

import aigc_lab as al


def test_compiled_decoding_matches_eager_and_reports_its_cost(llama_tiny):
    torch.manual_seed(0)
    tok = llama_tiny.tokenizer
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=len(tok), n_positions=256,
                                       eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)).eval()
    eager = al.models.ModelHandle(model, tok, "tiny-gpt2", "causal")
    fast = al.infer.compile_model(eager)
    assert fast is not eager and getattr(eager, "compile_s", None) is None
    assert fast.compile_s > 0
    assert al.infer.compile_model(fast) is fast  # paid once
    for prompt in ("Once upon a time", "The quick brown fox jumps over the lazy dog again and again"):
        want = al.generate(eager, prompt, max_new_tokens=12, ignore_eos=True).wait().ids
        got = al.generate(fast, prompt, max_new_tokens=12, ignore_eos=True).wait().ids
        assert got == want
    # the compiled model runs itself: no kernel twin of the compiled module (a run's config says which path ran)
    assert al.generate(fast, "x", max_new_tokens=2).wait().params.cpu_kernel is False
