"""The memory check refuses a run that will not fit, before allocating, and says what to change."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from aigc_lab.bus import EventBus
from aigc_lab.errors import AigcLabError
from aigc_lab.models import ModelHandle, memory, train_tokenizer
from aigc_lab.train import TrainingMemoryError, finetune
from aigc_lab.train.peak_memory import PeakMemory

CORPUS = ["the cat sat on the mat and looked at the dog", "a dog ran after the cat in the garden"] * 10


def test_memory_check_refuses_full_suggests_lora_and_lets_lora_through(monkeypatch, tmp_path):
    tok = train_tokenizer(CORPUS, 300)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=128, n_layer=4, n_head=4, n_positions=64))
    h = ModelHandle(model, tok, "gpt-mem", "causal")
    full = memory.training_memory(model, batch_size=8, seq_len=64, copy=True)
    targets = ("c_attn", "c_proj", "c_fc")
    lora = memory.training_memory(model, batch_size=8, seq_len=64, copy=True,
                                 trainable_params=memory.lora_params(model, targets, 8))
    params = sum(p.numel() for p in model.parameters())
    assert full.trainable == params * 12 and lora.trainable < full.trainable / 5
    assert full.activations > memory.training_memory(model, batch_size=1, seq_len=64, copy=True).activations
    recompute = memory.training_memory(model, batch_size=8, seq_len=64, copy=True, checkpointing=True)
    logits = 8 * 64 * len(tok) * 4 * 3  # kept either way
    assert recompute.activations - logits < (full.activations - logits) / 2
    free = (lora.total + full.total) // 2
    monkeypatch.setattr(memory, "available_memory", lambda device=None: free)
    with pytest.raises(TrainingMemoryError, match="method='lora'.*smaller batch_size") as err:
        finetune(h, CORPUS, max_steps=1, batch_size=8, max_length=64, event_bus=EventBus(), progress=False)
    assert isinstance(err.value, AigcLabError) and "MB" in str(err.value)
    run = finetune(h, CORPUS, method="lora", max_steps=1, batch_size=8, max_length=64, event_bus=EventBus(),
                   progress=False, output_dir=tmp_path).wait()
    assert run.status == "ok"
    monkeypatch.setattr(memory, "available_memory", lambda device=None: lora.total // 4)
    with pytest.raises(TrainingMemoryError, match="smaller batch_size") as err:
        finetune(h, CORPUS, method="lora", max_steps=1, batch_size=8, max_length=64, event_bus=EventBus())
    assert "method='lora'" not in str(err.value)


def test_peak_memory_sees_what_a_run_allocated_and_frees():
    before = PeakMemory()
    with before as m:
        block = torch.ones(50 * 2**20)  # 200 MB, touched
        block.add_(1)
        import time

        time.sleep(0.1)  # a few samples while it is held
        del block
    assert m.added_mb >= 150, (m.start_mb, m.peak_mb)
    with PeakMemory() as idle:
        pass
    assert idle.added_mb < 50


def test_a_run_reports_the_memory_it_added(tmp_path):
    from aigc_lab.bus import Recorder

    tok = train_tokenizer(CORPUS, 300)
    h = ModelHandle(GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=2, n_positions=64)),
                    tok, "gpt-peak", "causal")
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    run = finetune(h, CORPUS, max_steps=2, batch_size=4, max_length=32, event_bus=bus, progress=False,
                   output_dir=tmp_path).wait()
    assert run.peak_memory_mb is not None and run.peak_memory_mb >= 0
    end = rec[run.run].end
    assert end.metrics.peak_mem_mb == run._loop.memory.peak_mb >= run._loop.memory.start_mb > 0


def test_the_catalog_and_finetune_use_one_estimator():
    """What ``estimate_memory`` adds for fine-tuning (before loading) is what ``training_memory`` computes for
    the loaded model (before a run): same weights, optimizer state and activations."""
    from transformers import GPT2Config

    config = GPT2Config(vocab_size=500, n_embd=64, n_layer=2, n_head=4, n_positions=64)
    model = GPT2LMHeadModel(config)
    before = memory.estimate_memory(config, "float32", batch_size=4, seq_len=32, lora_rank=8)
    full = memory.training_memory(model, batch_size=4, seq_len=32, copy=True)
    assert before.full_finetune_bytes - before.load_bytes == full.total
    lora = memory.training_memory(model, batch_size=4, seq_len=32, copy=False,
                                  trainable_params=memory.lora_params(model, memory.LORA_TARGETS, 8))
    assert before.lora_bytes - before.load_bytes == lora.total
    half = memory.estimate_memory(config, "bfloat16", batch_size=4, seq_len=32)
    assert half.full_finetune_bytes - half.load_bytes < before.full_finetune_bytes - before.load_bytes  # 16-bit acts
