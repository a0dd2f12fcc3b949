"""Generative evaluation: greedy outputs from the engine's own decoder (what HF ``generate`` would give), and
exact match / chrF / BLEU scores that rank answers by how close they are."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

import aigc_lab as al
from aigc_lab.models import ModelHandle, train_tokenizer
from aigc_lab.train.evaluate import generation_scores, greedy_outputs, pair_scores

PAIRS = [(f"add {i} {i + 1}", str(2 * i + 1)) for i in range(40)]


@pytest.fixture(scope="module")
def causal():
    tok = train_tokenizer(al.data.samples.python_docs()[:20] + [f"{a}\n{b}" for a, b in PAIRS], 400)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=2, n_positions=64,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    return ModelHandle(GPT2LMHeadModel(cfg), tok, "gpt", "causal")


@pytest.fixture(scope="module")
def seq2seq():
    tok = train_tokenizer([a for a, _ in PAIRS] + [b for _, b in PAIRS], 300, seq2seq=True)
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                   feed_forward_proj="relu", pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id)
    return ModelHandle(T5ForConditionalGeneration(cfg), tok, "t5", "seq2seq")


def _hf_greedy(handle, prompts, kind, n):
    tok, outs = handle.tokenizer, []
    handle.model.eval()
    for prompt in prompts:  # one at a time: no padding to reason about
        text = prompt if kind == "seq2seq" else prompt + "\n"
        enc = tok(text, return_tensors="pt")
        gen = handle.model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id,
                                    eos_token_id=tok.eos_token_id)
        if kind != "seq2seq":
            gen = gen[:, enc["input_ids"].shape[1]:]
        outs.append(tok.decode(gen[0], skip_special_tokens=True).split("\n")[0])
    return outs


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_greedy_outputs_come_from_the_engine_and_equal_transformers_generate(request, kind):
    handle = request.getfixturevalue(kind)
    prompts = [a for a, _ in PAIRS[:7]]
    handle.model.train()  # the training loop's state: evaluation must switch dropout off, then back on
    ours = greedy_outputs(handle.model, handle.tokenizer, prompts, kind=kind, max_new_tokens=8, batch_size=3)
    assert handle.model.training
    assert ours == _hf_greedy(handle, prompts, kind, 8)


def test_scores_rank_near_misses_between_wrong_and_right():
    targets = ["the red lamp costs 12 euros", "blue chair: 40 euros"]
    right = generation_scores(targets, targets)
    near = generation_scores(["the red lamp costs 13 euros", "blue chair: 41 euros"], targets)
    wrong = generation_scores(["zzz", "qqq"], targets)
    assert right == {"exact_match": 1.0, "chrf": pytest.approx(100.0), "bleu": pytest.approx(100.0)}
    assert near["exact_match"] == 0.0 and wrong["exact_match"] == 0.0
    assert 0.0 <= wrong["chrf"] < near["chrf"] < 100.0 and wrong["bleu"] < near["bleu"] < 100.0
    assert generation_scores(["  a b  "], ["a b"])["exact_match"] == 1.0  # surrounding whitespace ignored
    assert generation_scores([], []) == {"exact_match": 0.0, "chrf": 0.0, "bleu": 0.0}


def test_pair_scores_score_the_engines_outputs(seq2seq):
    preds = greedy_outputs(seq2seq.model, seq2seq.tokenizer, [a for a, _ in PAIRS[:6]], kind="seq2seq",
                           max_new_tokens=6)
    assert pair_scores(seq2seq.model, seq2seq.tokenizer, PAIRS[:6], kind="seq2seq", max_new_tokens=6) == \
        generation_scores(preds, [b for _, b in PAIRS[:6]])
