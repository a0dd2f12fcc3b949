"""Mixed precision: 16-bit models train fp32 master weights under bf16 autocast (CPU included) and end in their
own dtype; pure fp16 is refused with what to use; resume maps checkpoints onto the run's device; the
multi-process start method works with CUDA."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel

from aigc_lab.bus import EventBus, Recorder
from aigc_lab.models import ModelHandle, train_tokenizer
from aigc_lab.train import TrainConfigError, finetune
from aigc_lab.train import checkpoint as ckpt
from aigc_lab.train.distributed import start_method_for
from aigc_lab.train.precision import choose

CORPUS = ["the cat sat on the mat and looked at the dog", "a dog ran after the cat in the garden"] * 8
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, 200)


def _handle(tok, dtype):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64))
    return ModelHandle(model.to(dtype), tok, f"gpt-{dtype}", "causal")


def test_precision_is_chosen_in_one_place(monkeypatch):
    assert choose("auto", weights="float32", device=CPU).autocast is None
    assert choose("auto", weights="bfloat16", device=CPU).autocast == "bfloat16"
    assert choose("auto", weights="float16", device=CPU).autocast == "bfloat16"  # fp32 range: no loss scaling
    assert choose("fp32", weights="bfloat16", device=CPU).autocast is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert choose("auto", weights="float32", device=CUDA).autocast == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert choose("auto", weights="float16", device=CUDA).autocast is None  # fp32 compute over fp32 masters
    with pytest.raises(TrainConfigError, match="no bf16 support"):
        choose("bf16", weights="float32", device=CUDA)
    with pytest.raises(TrainConfigError, match="fp16 autocast needs loss scaling.*precision='bf16'"):
        choose("fp16", weights="float16", device=CPU)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_16_bit_model_trains_fp32_master_weights_and_ends_in_its_dtype(tok, tmp_path, dtype):
    h = _handle(tok, dtype)
    before = {k: v.clone() for k, v in h.model.state_dict().items()}
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    run = finetune(h, CORPUS, max_steps=3, batch_size=4, max_length=32, lr=1e-3, event_bus=bus, progress=False,
                   background=False, output_dir=tmp_path)
    assert run.status == "ok" and all(torch.isfinite(torch.tensor(run.losses)))
    config = rec[run.run].start.config
    assert config["autocast"] == "bfloat16" and config["master_weights"] == "float32"
    saved = load_file(run.last_checkpoint / "model" / "model.safetensors")
    assert {t.dtype for t in saved.values() if t.is_floating_point()} == {torch.float32}  # the masters
    assert run.model.dtype == str(dtype).removeprefix("torch.")  # handed back in the dtype it came in
    assert h.model.dtype == dtype and all(torch.equal(v, before[k]) for k, v in h.model.state_dict().items())


def test_pure_fp16_is_refused_before_anything_runs(tok):
    with pytest.raises(TrainConfigError, match="precision='fp16' is not supported"):
        finetune(_handle(tok, torch.float16), CORPUS, max_steps=1, precision="fp16", event_bus=EventBus())


def test_resume_maps_the_checkpoint_onto_the_run_device(tok, tmp_path, monkeypatch):
    h = _handle(tok, torch.float32)
    finetune(h, CORPUS, max_steps=2, batch_size=4, max_length=32, event_bus=EventBus(), progress=False,
             background=False, output_dir=tmp_path)
    seen = {}
    real_state, real_weights = ckpt.load_state, ckpt.load_weights
    monkeypatch.setattr(ckpt, "load_state", lambda path, device: seen.setdefault("state", device)
                        and real_state(path, device))
    monkeypatch.setattr(ckpt, "load_weights", lambda model, path, device: seen.setdefault("weights", device)
                        and real_weights(model, path, device))
    mapped = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: mapped.append(kw.get("map_location")) or real_load(*a, **kw))
    run = finetune(h, CORPUS, max_steps=3, batch_size=4, max_length=32, event_bus=EventBus(), progress=False,
                   background=False, resume=tmp_path)
    assert run.status == "ok" and run.step == 3
    assert seen == {"state": torch.device("cpu"), "weights": torch.device("cpu")} and mapped == [torch.device("cpu")]


def test_the_start_method_works_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert start_method_for("auto") == "fork" and start_method_for("spawn") == "spawn"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert start_method_for("auto") == "spawn"  # a forked child cannot use CUDA
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(TrainConfigError, match="initialised CUDA.*start_method='spawn'"):
        start_method_for("fork")
    with pytest.raises(TrainConfigError, match="start_method must be one of auto, fork, spawn"):
        start_method_for("thread")
