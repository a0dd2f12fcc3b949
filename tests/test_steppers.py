"""The stepper registry: greedy parity for every entry that applies to each test model, on each layer backend,
and the choice recorded (``run.start``) and explained (``al.infer.explain``).

A new entry in ``infer/backends.py``'s ``STEPPERS`` is tested here by being there: the loop below runs every
entry whose ``refusal`` is None for a model, forced with ``generate(..., stepper=name)``.
These need the CPU kernel, which ``make`` builds; without it they FAIL saying so.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

import aigc_lab as al
from aigc_lab.bus import EventBus, Recorder
from aigc_lab.errors import GenerationConfigError
from aigc_lab.infer import STEPPERS, kernel_build
from aigc_lab.infer.stepper import DecodeRequest

N = 12
PROMPT = "Once upon a time"
BATCH = ["Once upon a time", "The interpreter executes", "A"]


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if not kernel_build.built():
        pytest.fail("the CPU kernel is not built: run `make` (it builds it) before the tests")


def _reference(model, tok, prompts, seq2seq=False):
    """transformers' own greedy decoding of ``prompts`` (left-padded when several), N tokens each."""
    side, tok.padding_side = tok.padding_side, "left"
    try:
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        enc = tok(prompts, return_tensors="pt", padding=True)
    finally:
        tok.padding_side = side
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=N, min_new_tokens=N, do_sample=False, pad_token_id=tok.pad_token_id)
    return out[:, 1:].tolist() if seq2seq else out[:, enc["input_ids"].shape[1]:].tolist()


def _tiny_t5(tok):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tok), d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4,
                      decoder_start_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, eos_token_id=len(tok) - 1)
    return al.models.ModelHandle(T5ForConditionalGeneration(config).eval(), tok, "tiny-t5", "seq2seq")


def _cases(gpt_tiny, llama_tiny):
    """(label, handle, reference model) for each test model; the reference is what the result must equal."""
    bf16 = al.quantize(llama_tiny, "bf16")
    int8 = al.quantize(gpt_tiny, "int8")
    lstm = al.models.build_starter("starter:lstm-tiny", ["a small corpus for the recurrent model"] * 20)
    return [
        ("gpt2-fp32", gpt_tiny, gpt_tiny.model),
        ("gpt2-int8", int8, int8.model),
        ("llama-fp32", llama_tiny, llama_tiny.model),
        # 16-bit weights decode on their fp32 copy: the reference is transformers on that copy
        ("llama-bf16", bf16, copy.deepcopy(bf16.model).float()),
        ("t5", _tiny_t5(llama_tiny.tokenizer), None),
        ("lstm", lstm, lstm.model),
    ]


def _applies(handle, cpu_kernel, batch):
    """The registry entries that apply to ``handle`` on the layers ``cpu_kernel`` gives, by name."""
    from aigc_lab.infer.backends import plan

    chosen = plan(handle, DecodeRequest(batch=batch, cpu_kernel=cpu_kernel))
    request = DecodeRequest(batch=batch, cpu_kernel=cpu_kernel)
    return chosen, [e.name for e in STEPPERS if e.refusal(handle, chosen.layers.model, request) is None]


@pytest.mark.parametrize("cpu_kernel", [None, False], ids=["kernel-layers", "torch-layers"])
def test_every_entry_that_applies_gives_transformers_greedy_tokens(gpt_tiny, llama_tiny, cpu_kernel):
    ran = set()
    for label, handle, ref_model in _cases(gpt_tiny, llama_tiny):
        seq2seq = handle.kind == "seq2seq"
        ref_model = handle.model if ref_model is None else ref_model
        for prompts in (PROMPT, BATCH):
            batch = 1 if isinstance(prompts, str) else len(prompts)
            chosen, names = _applies(handle, cpu_kernel, batch)
            assert chosen.stepper.name in names
            want = _reference(ref_model, handle.tokenizer, [prompts] if batch == 1 else prompts, seq2seq)
            for name in names:
                out = al.generate(handle, prompts, max_new_tokens=N, ignore_eos=True, cpu_kernel=cpu_kernel,
                                  stepper=name)
                streams = [out] if batch == 1 else out
                got = [s.wait().ids for s in streams]
                assert all(s.plan.stepper.name == name for s in streams)
                assert got == want, f"{label}, {name} on {chosen.layers.name} layers, batch {batch}"
                ran.add((label, chosen.layers.name, name))
    # what the registry promises on these models: the kernel's whole-step decoders, the lean steps, batches,
    # seq2seq and the generic forward (the LSTM) all ran
    names = {name for _, _, name in ran}
    expected = {"lean-gpt2", "lean-llama", "seq2seq", "batch", "forward"}
    if cpu_kernel is None:
        expected |= {"fused-gpt2", "fused-llama"}
        assert ("llama-bf16", "kernel-upcast", "fused-llama") in ran
        assert ("gpt2-int8", "kernel", "fused-gpt2") in ran
    assert expected <= names, f"never ran: {expected - names}"


def test_the_run_records_the_stepper_and_why_the_others_did_not_run(gpt_tiny):
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    stream = al.generate(gpt_tiny, PROMPT, max_new_tokens=4, cpu_kernel=False, event_bus=bus).wait()
    config = rec[stream.run].start.config
    assert config["stepper"] == "lean-gpt2" and config["layers"] == "torch"
    assert "fused-gpt2: needs the kernel layers" in config["not_chosen"]
    assert "kernel: cpu_kernel=False" in config["not_chosen"]
    assert "forward: applies, but lean-gpt2 ranks first" in config["not_chosen"]
    assert any(x.startswith("fused-llama: GPT2LMHeadModel is not one of") for x in config["not_chosen"])


def test_explain_prints_the_same_choice_before_running(gpt_tiny, capsys):
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    explained = al.infer.explain(gpt_tiny, PROMPT, cpu_kernel=False)
    printed = capsys.readouterr().out
    assert "* lean-gpt2" in printed and "<- runs" in printed and "not used: needs the kernel layers" in printed
    assert not rec.runs  # nothing ran
    stream = al.generate(gpt_tiny, PROMPT, max_new_tokens=2, cpu_kernel=False, event_bus=bus).wait()
    assert rec[stream.run].start.config["not_chosen"] == explained.record()["not_chosen"]
    batch = al.infer.explain(gpt_tiny, ["a", "b"])
    assert batch.stepper.name == "batch" and batch.layers.name == "torch"


def test_a_stepper_that_cannot_run_is_refused_with_its_reason(gpt_tiny, llama_tiny):
    with pytest.raises(GenerationConfigError, match="'fused-llama' cannot run this generation: GPT2LMHeadModel"):
        al.generate(gpt_tiny, PROMPT, stepper="fused-llama")
    with pytest.raises(GenerationConfigError, match="'fused-gpt2' cannot run .*needs the kernel layers"):
        al.generate(gpt_tiny, PROMPT, stepper="fused-gpt2", cpu_kernel=False)
    with pytest.raises(GenerationConfigError, match="unknown stepper 'warp'; the registry has fused-gpt2"):
        al.generate(gpt_tiny, PROMPT, stepper="warp")


def test_each_entry_names_its_reason_for_a_model_it_cannot_run(llama_tiny):
    """Every refusal is a sentence, never a bare None/False: what explain() and run.start show."""
    handle = SimpleNamespace(kind="causal")
    for entry in STEPPERS:
        reason = entry.refusal(handle, llama_tiny.model, DecodeRequest(batch=3))
        if entry.name != "batch":
            assert isinstance(reason, str) and len(reason) > 5, entry.name
