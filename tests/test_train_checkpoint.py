"""Checkpoints: atomic, complete, resume reproduces the uninterrupted curve; cancel keeps the curve and resumes."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

import aigc_lab as al
from aigc_lab import runs
from aigc_lab.bus import EventBus, Recorder
from aigc_lab.events import TrainStep
from aigc_lab.models import ModelHandle, train_tokenizer
from aigc_lab.train import TrainConfigError, finetune
from aigc_lab.train import checkpoint as ckpt

CORPUS = al.data.samples.python_docs()[:10]
KW = dict(progress=False, batch_size=4, max_length=32, lr=3e-3, seed=3)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, 384)


def gpt(tok):
    torch.manual_seed(0)  # dropout stays on (0.1): resume must restore the RNG state to match
    cfg = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=2, n_positions=64,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    return ModelHandle(GPT2LMHeadModel(cfg), tok, "gpt-ckpt", "causal")


@pytest.mark.parametrize("method", ["full", "lora"])
def test_resume_reaches_the_same_loss_curve_as_an_uninterrupted_run(tok, tmp_path, method):
    h = gpt(tok)
    full = finetune(h, CORPUS, method=method, max_steps=10, save_every=5, grad_accum=2, output_dir=tmp_path / "a",
                    event_bus=EventBus(), **KW).wait()
    at5 = tmp_path / "a" / "step-000005"
    meta = json.loads((at5 / "trainer.json").read_text())
    assert meta["step"] == 5 and meta["micro_batch"] == 10 and meta["config"]["seed"] == 3 and len(meta["steps"]) == 5
    assert (at5 / ("adapter/adapter_model.safetensors" if method == "lora" else "model/model.safetensors")).exists()
    state = torch.load(at5 / "state.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng"} <= set(state) and {"python", "numpy", "torch"} <= set(state["rng"])
    resumed = finetune(h, CORPUS, method=method, max_steps=10, grad_accum=2, resume=at5,
                       output_dir=tmp_path / "b", event_bus=EventBus(), **KW).wait()
    a, b = full.history, resumed.history
    assert list(b.step) == list(range(1, 11))  # the resumed run carries the curve from the checkpoint
    assert b.loss.tolist() == pytest.approx(a.loss.tolist(), abs=1e-5)
    assert b.lr.tolist() == pytest.approx(a.lr.tolist())
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.allclose(full.model.model(ids).logits, resumed.model.model(ids).logits, atol=1e-4)


def test_checkpoints_are_atomic_pruned_and_load_with_transformers(tok, tmp_path, monkeypatch):
    run = finetune(gpt(tok), CORPUS, max_steps=6, save_every=2, keep_last=2, output_dir=tmp_path,
                   event_bus=EventBus(), **KW).wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000004", "step-000006"]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "step-000006" / "model")
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(ids).logits, run.model.model(ids).logits, atol=1e-5)
    assert al.models.load(str(tmp_path / "step-000006" / "model")).params == run.model.params

    def crash(tmp, **parts):
        (tmp / "state.pt").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_write", crash)
    with pytest.raises(OSError, match="disk full"):
        finetune(gpt(tok), CORPUS, max_steps=2, output_dir=tmp_path / "c", event_bus=EventBus(), **KW).wait()
    assert list((tmp_path / "c").iterdir()) == []  # nothing half-written, not even the temp folder


def test_resume_refuses_a_different_data_order(tok, tmp_path):
    finetune(gpt(tok), CORPUS, max_steps=2, output_dir=tmp_path, event_bus=EventBus(), **KW).wait()
    with pytest.raises(TrainConfigError, match="batch_size"):
        finetune(gpt(tok), CORPUS, max_steps=4, resume=tmp_path, event_bus=EventBus(), **{**KW, "batch_size": 2})


def test_cancel_keeps_the_curve_writes_a_checkpoint_and_resumes(tok, tmp_path):
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    seen = threading.Event()
    bus.subscribe(lambda e: isinstance(e, TrainStep) and e.step >= 3 and seen.set())
    kw = {**KW, "schedule": "constant", "warmup_steps": 0}
    run = finetune(gpt(tok), CORPUS, max_steps=100_000, output_dir=tmp_path / "run", event_bus=bus, **kw)
    assert seen.wait(60)
    assert runs.cancel(run.run)  # the panel's path
    run.wait(60)
    r = rec[run.run]
    n = run.step
    assert run.status == "cancelled" and r.end.status == "cancelled" and 3 <= n < 100_000
    assert [s.step for s in r.steps] == list(range(1, n + 1)) and list(run.history.step) == list(range(1, n + 1))
    assert [c.step for c in r.checkpoints] == [n] and run.last_checkpoint.name == f"step-{n:06d}"
    assert run.run not in runs.live() and not runs.cancel(run.run)
    resumed = finetune(gpt(tok), CORPUS, max_steps=n + 3, resume=run.last_checkpoint, output_dir=tmp_path / "r",
                       event_bus=EventBus(), **kw).wait()
    straight = finetune(gpt(tok), CORPUS, max_steps=n + 3, output_dir=tmp_path / "s", event_bus=EventBus(),
                        **kw).wait()
    assert resumed.history.loss.tolist() == pytest.approx(straight.history.loss.tolist(), abs=1e-5)
