"""The date task (``al.data.samples.dates``): a short fine-tune of a small seq2seq model clearly lifts exact match."""

from __future__ import annotations

import torch
from transformers import T5Config, T5ForConditionalGeneration

import aigc_lab as al
from aigc_lab.bus import EventBus, Recorder
from aigc_lab.models import ModelHandle, train_tokenizer
from aigc_lab.train import finetune
from aigc_lab.train.evaluate import exact_match


def test_date_normalisation_exact_match_improves_after_a_short_finetune(tmp_path):
    df = al.data.samples.dates(2900, seed=0)
    pairs = list(zip(df.input, df.target, strict=True))
    train, val = pairs[:2800], pairs[2800:]
    # a near character-level tokenizer trained on the date strings themselves
    tok = train_tokenizer([a for a, _ in pairs] + [b for _, b in pairs], 300, seq2seq=True)
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(tok), d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4, dropout_rate=0.0,
                   feed_forward_proj="relu", pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id)
    h = ModelHandle(T5ForConditionalGeneration(cfg), tok, "t5-dates", "seq2seq")
    before = exact_match(h.model, tok, val, kind="seq2seq", max_new_tokens=16)
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    run = finetune(h, train, val=val, max_steps=350, batch_size=32, lr=3e-3, warmup_steps=20, max_length=48,
                   max_target_length=16, eval_generate=len(val), save_final=False, progress=False,
                   output_dir=tmp_path, event_bus=bus).wait()
    after = run.evals[-1]["exact_match"]
    assert after == exact_match(run.model.model, tok, val, kind="seq2seq", max_new_tokens=16)
    assert rec[run.run].evals[-1].metrics["exact_match"] == after
    print(f"date task exact match: before {before:.2f}, after {after:.2f} ({run.step} steps)")
    assert before <= 0.02 and after >= 0.1 and after >= before + 0.08
    assert run.history.loss.iloc[-20:].mean() < run.history.loss.iloc[:20].mean() / 2
