"""The memory check refuses a run that will not fit, before allocating, and says what to change."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from aigc_lab.bus import EventBus
from aigc_lab.errors import AigcLabError
from aigc_lab.models import ModelHandle, train_tokenizer
from aigc_lab.train import TrainingMemoryError, finetune
from aigc_lab.train import memory as train_memory

CORPUS = ["the cat sat on the mat and looked at the dog", "a dog ran after the cat in the garden"] * 10


def test_memory_check_refuses_full_suggests_lora_and_lets_lora_through(monkeypatch, tmp_path):
    tok = train_tokenizer(CORPUS, 300)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=128, n_layer=4, n_head=4, n_positions=64))
    h = ModelHandle(model, tok, "gpt-mem", "causal")
    full = train_memory.estimate(model, batch_size=8, seq_len=64, copy=True)
    targets = ("c_attn", "c_proj", "c_fc")
    lora = train_memory.estimate(model, batch_size=8, seq_len=64, copy=True,
                                 trainable_params=train_memory.lora_params(model, targets, 8))
    params = sum(p.numel() for p in model.parameters())
    assert full.trainable == params * 12 and lora.trainable < full.trainable / 5
    assert full.activations > train_memory.estimate(model, batch_size=1, seq_len=64, copy=True).activations
    recompute = train_memory.estimate(model, batch_size=8, seq_len=64, copy=True, checkpointing=True)
    logits = 8 * 64 * len(tok) * 4 * 3  # kept either way
    assert recompute.activations - logits < (full.activations - logits) / 2
    free = (lora.total + full.total) // 2
    monkeypatch.setattr(train_memory, "available_memory", lambda device=None: free)
    with pytest.raises(TrainingMemoryError, match="method='lora'.*smaller batch_size") as err:
        finetune(h, CORPUS, max_steps=1, batch_size=8, max_length=64, event_bus=EventBus(), progress=False)
    assert isinstance(err.value, AigcLabError) and "MB" in str(err.value)
    run = finetune(h, CORPUS, method="lora", max_steps=1, batch_size=8, max_length=64, event_bus=EventBus(),
                   progress=False, output_dir=tmp_path).wait()
    assert run.status == "ok"
    monkeypatch.setattr(train_memory, "available_memory", lambda device=None: lora.total // 4)
    with pytest.raises(TrainingMemoryError, match="smaller batch_size") as err:
        finetune(h, CORPUS, method="lora", max_steps=1, batch_size=8, max_length=64, event_bus=EventBus())
    assert "method='lora'" not in str(err.value)
