"""Fine-tuning: full / LoRA / distill on tiny causal and seq2seq models, telemetry on the bus, config checks."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

import aigc_lab as al
from aigc_lab.bus import EventBus, Recorder
from aigc_lab.events import from_message, to_message
from aigc_lab.models import ModelHandle, train_tokenizer
from aigc_lab.train import TrainConfigError, finetune
from aigc_lab.train.collate import IGNORE, encode
from aigc_lab.train.schedule import lr_factor

CORPUS = al.data.samples.python_docs()[:12]
FAST = dict(progress=False, batch_size=4, max_length=32)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, 384)


def gpt(tok, layers=2, width=64, seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=width, n_layer=layers, n_head=2, n_positions=64,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    return ModelHandle(GPT2LMHeadModel(cfg), tok, f"gpt-{layers}x{width}", "causal")


def t5(seed=0):
    pairs = [(f"add {i} {i + 1}", str(2 * i + 1)) for i in range(60)]
    tok = train_tokenizer([a for a, _ in pairs] + [b for _, b in pairs], 300, seq2seq=True)
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                   feed_forward_proj="relu", pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id)
    return ModelHandle(T5ForConditionalGeneration(cfg), tok, "t5-tiny", "seq2seq"), pairs


def recorded():
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    return bus, rec


def test_full_causal_streams_every_step_and_learns(tok, tmp_path):
    bus, rec = recorded()
    h = gpt(tok)
    before = {k: v.clone() for k, v in h.model.state_dict().items()}
    run = finetune(h, CORPUS, val=CORPUS[:2], max_steps=12, lr=3e-3, eval_every=6, event_bus=bus,
                   output_dir=tmp_path, **FAST).wait()
    r = rec[run.run]
    assert run.status == "ok" and r.end.status == "ok" and r.end.error is None
    assert r.start.kind == "train" and r.start.model.name == "gpt-2x64" and r.start.config["max_steps"] == 12
    assert [s.step for s in r.steps] == list(range(1, 13))
    assert all(s.tok_s > 0 and s.lr > 0 for s in r.steps)
    assert [e.step for e in r.evals] == [6, 12]
    assert r.evals[-1].ppl == pytest.approx(math.exp(r.evals[-1].val_loss))
    assert [c.step for c in r.checkpoints] == [12]
    assert r.steps[-1].loss < r.steps[0].loss - 0.5
    for ev in (r.start, r.steps[0], r.evals[0], r.checkpoints[0], r.end):  # every event is valid protocol v1
        assert from_message(to_message(ev)) == ev or ev.type == "run.start"
    hist = run.history
    assert list(hist.step) == list(range(1, 13)) and hist.loss.tolist() == [s.loss for s in r.steps]
    assert hist.val_loss.notna().sum() == 2 and run.best["step"] in (6, 12)
    assert all(torch.equal(before[k], v) for k, v in h.model.state_dict().items())  # the original is untouched
    assert run.model.model is not h.model and run.model.kind == "causal"


def test_lora_on_gpt2_conv1d_trains_adapters_only_and_merges(tok, tmp_path):
    h = gpt(tok)
    run = finetune(h, CORPUS, method="lora", max_steps=8, lr=1e-2, event_bus=EventBus(), output_dir=tmp_path,
                   **FAST).wait()
    peft_model = run._loop.model
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"c_attn", "c_proj", "c_fc"}
    assert run.history.loss.iloc[-1] < run.history.loss.iloc[0]
    adapter = run.save_adapter(tmp_path / "adapter")
    assert (adapter / "adapter_model.safetensors").exists() and (adapter / "adapter_config.json").exists()
    assert (run.last_checkpoint / "adapter" / "adapter_model.safetensors").exists()
    merged = run.model
    assert not any("lora" in n for n, _ in merged.model.named_parameters())
    merged.model.save_pretrained(tmp_path / "merged")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, merged.model(ids).logits, atol=1e-5)
        assert not torch.allclose(h.model.eval()(ids).logits, merged.model(ids).logits, atol=1e-4)
    from peft import PeftModel  # the saved adapter reproduces the merged model on a fresh copy of the base

    base = gpt(tok)
    base.model.load_state_dict(h.model.state_dict())
    with torch.no_grad():
        reloaded = PeftModel.from_pretrained(base.model, adapter).eval()
        assert torch.allclose(reloaded(ids).logits, merged.model(ids).logits, atol=1e-5)


def _checkpointing(model) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def test_lora_recomputes_activations_by_default_and_keeps_the_same_curve(tok, tmp_path):
    """LoRA turns gradient checkpointing on (on its own copy); the loss curve is the one without it."""
    h = gpt(tok)
    runs = {}
    for gc in (None, False):
        runs[gc] = finetune(h, CORPUS, method="lora", max_steps=4, lr=1e-2, gradient_checkpointing=gc,
                            event_bus=EventBus(), output_dir=tmp_path / str(gc), save_final=False, **FAST).wait()
    assert runs[None].config.checkpointing and _checkpointing(runs[None]._loop.model)
    assert not runs[False].config.checkpointing and not _checkpointing(runs[False]._loop.model)
    assert not _checkpointing(h.model)  # the caller's model is untouched
    a, b = runs[None].history.loss.tolist(), runs[False].history.loss.tolist()
    assert len(a) == 4 and a == pytest.approx(b, rel=1e-5, abs=1e-6)


def test_full_keeps_activations_by_default_and_can_recompute_them(tok, tmp_path):
    h = gpt(tok)
    plain = finetune(h, CORPUS, max_steps=3, lr=3e-3, event_bus=EventBus(), output_dir=tmp_path / "a",
                     save_final=False, **FAST).wait()
    assert not plain.config.checkpointing and not _checkpointing(plain._loop.model)
    gc = finetune(h, CORPUS, max_steps=3, lr=3e-3, gradient_checkpointing=True, event_bus=EventBus(),
                  output_dir=tmp_path / "b", save_final=False, **FAST).wait()
    assert _checkpointing(gc._loop.model) and not _checkpointing(h.model)
    assert gc.history.loss.tolist() == pytest.approx(plain.history.loss.tolist(), rel=1e-5, abs=1e-6)


def test_gradient_checkpointing_on_a_model_without_it_is_refused(tmp_path):
    lstm = al.models.load("starter:lstm-tiny")
    with pytest.raises(TrainConfigError, match="gradient_checkpointing=False"):
        finetune(lstm, CORPUS, max_steps=1, gradient_checkpointing=True, event_bus=EventBus(),
                 output_dir=tmp_path, **FAST).wait()


def test_lora_and_full_on_seq2seq_with_exact_match(tmp_path):
    h, pairs = t5()
    ds = al.data.load(__import__("pandas").DataFrame({"q": [a for a, _ in pairs], "a": [b for _, b in pairs]}),
                      input="q", target="a", event_bus=EventBus())
    splits = ds.split(val=0.2, test=0.0, seed=0)
    for method in ("full", "lora"):
        run = finetune(h, splits, method=method, max_steps=6, lr=3e-3, eval_every=3, event_bus=EventBus(),
                       output_dir=tmp_path / method, eval_generate=8, **FAST).wait()
        assert run.status == "ok" and len(run.evals) == 2
        assert all(0.0 <= e["exact_match"] <= 1.0 and 0.0 <= e["chrf"] <= 100.0 and 0.0 <= e["bleu"] <= 100.0
                   for e in run.evals)
        assert run.history.loss.iloc[-1] < run.history.loss.iloc[0]
    lora_names = [n for n, p in run._loop.model.named_parameters() if p.requires_grad]
    assert {n.split(".")[-4] for n in lora_names} >= {"q", "k", "v", "o"}


def test_distill_student_learns_from_teacher_logits(tok, tmp_path):
    teacher = finetune(gpt(tok, layers=2, width=96, seed=1), CORPUS, max_steps=10, lr=3e-3, event_bus=EventBus(),
                       output_dir=tmp_path / "t", **FAST).wait().model
    student = gpt(tok, layers=1, width=32)
    t_state = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    run = finetune(student, CORPUS, method="distill", teacher=teacher, max_steps=10, lr=3e-3, alpha=0.9,
                   temperature=2.0, event_bus=EventBus(), output_dir=tmp_path / "s", **FAST).wait()
    assert run.status == "ok" and run.history.loss.iloc[-1] < run.history.loss.iloc[0]
    assert all(torch.equal(t_state[k], v) for k, v in teacher.model.state_dict().items())
    with pytest.raises(TrainConfigError, match="teacher"):
        finetune(student, CORPUS, method="distill", event_bus=EventBus(), **FAST)
    other_tok = train_tokenizer(CORPUS[:3], 300)
    with pytest.raises(TrainConfigError, match="tokenizer"):
        finetune(student, CORPUS, method="distill", teacher=gpt(other_tok), event_bus=EventBus(), **FAST)


def test_foreground_run_and_error_ends_with_run_end_error(tok, tmp_path):
    bus, rec = recorded()
    run = finetune(gpt(tok), CORPUS, background=False, max_steps=2, event_bus=bus, output_dir=tmp_path, **FAST)
    assert run.done and run.status == "ok" and rec[run.run].end.status == "ok"
    broken = gpt(tok)
    broken.model.forward = lambda **kw: (_ for _ in ()).throw(RuntimeError("boom"))
    run = finetune(broken, CORPUS, max_steps=2, event_bus=bus, output_dir=tmp_path / "b", **FAST)
    with pytest.raises(RuntimeError, match="boom"):
        run.wait()
    assert run.status == "error" and rec[run.run].end.status == "error" and "boom" in rec[run.run].end.error
    assert not list((tmp_path / "b").glob("*")) if (tmp_path / "b").exists() else True


def test_bad_hyper_parameters_are_refused_with_the_fix(tok):
    with pytest.raises(TrainConfigError, match="unknown hyper-parameter.*learning_rat"):
        finetune(gpt(tok), CORPUS, learning_rat=1e-3)
    with pytest.raises(TrainConfigError, match="method"):
        finetune(gpt(tok), CORPUS, method="qlora")
    with pytest.raises(TrainConfigError, match="batch_size"):
        finetune(gpt(tok), CORPUS, batch_size=0)
    with pytest.raises(TrainConfigError, match="Dataset"):
        finetune(gpt(tok), [1, 2, 3])


def test_packing_fills_blocks_and_pairs_mask_the_prompt(tok):
    enc = encode(CORPUS, tok, "causal", max_length=32, max_target_length=8, packing=True)
    assert enc.packed and all(len(r) == 32 for r in enc.input_ids)
    total = sum(len(r) for r in tok(CORPUS, add_special_tokens=False)["input_ids"]) + len(CORPUS)
    assert len(enc) == total // 32
    pairs = encode([("hello there", "world")], tok, "causal", max_length=32, max_target_length=8, packing=True)
    prompt_len = len(tok("hello there\n", add_special_tokens=False)["input_ids"])
    assert pairs.labels[0][:prompt_len] == [IGNORE] * prompt_len and pairs.labels[0][-1] == tok.eos_token_id


def test_schedule_warms_up_then_decays():
    assert [lr_factor(s, 10, 2) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, 10, 2) == 1.0 and lr_factor(9, 10, 2) == pytest.approx(1 / 8)
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5) and lr_factor(9, 10, 0, "constant") == 1.0
