"""The streaming engine: parity with HF greedy decoding, exact detokenization, cancel, errors, events."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import aigc_lab as al
from aigc_lab.bus import EventBus, Recorder
from aigc_lab.errors import GenerationConfigError


def _hf_greedy(handle, prompt, n):
    ids = handle.tokenizer(prompt, return_tensors="pt").input_ids
    out = handle.model.generate(ids, max_new_tokens=n, do_sample=False, attention_mask=torch.ones_like(ids),
                                pad_token_id=handle.tokenizer.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("fixture", ["gpt_tiny", "llama_tiny"])
def test_greedy_matches_transformers_generate(request, fixture):
    handle = request.getfixturevalue(fixture)
    stream = al.generate(handle, "Once upon a time", max_new_tokens=24)
    ours = stream.wait().ids
    ref = _hf_greedy(handle, "Once upon a time", 24)
    assert ours == ref[: len(ours)] and len(ours) in (24, len(ref))


def test_pieces_concatenate_to_the_full_decode_even_with_multibyte_text(llama_tiny):
    stream = al.generate(llama_tiny, "naïve café ✓ 日本", max_new_tokens=48, temperature=1.5, seed=1)
    pieces = [t.text for t in stream]
    ids = [t.id for t in stream.tokens if t.id is not None]
    assert "".join(pieces) == llama_tiny.tokenizer.decode(ids)
    assert "\ufffd" not in "".join(pieces[:-1]) or "\ufffd" in llama_tiny.tokenizer.decode(ids)


def test_sampling_with_a_seed_is_reproducible(gpt_tiny):
    kw = dict(max_new_tokens=20, temperature=0.9, top_k=50, top_p=0.9, repetition_penalty=1.2, seed=7)
    assert al.generate(gpt_tiny, "The", **kw).text == al.generate(gpt_tiny, "The", **kw).text


def test_events_cover_the_run_and_metrics_are_consistent(gpt_tiny):
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    stream = al.generate(gpt_tiny, "Hello", max_new_tokens=16, event_bus=bus)
    seen = [t.ms for t in stream]
    record = rec[stream.run]
    assert record.start.model.name == "starter:gpt-tiny" and record.end.status == "ok"
    assert [t.i for t in record.tokens] == list(range(16)) and record.text == stream.text
    m = stream.metrics
    assert m.tokens == 16 and m.ttft_ms == pytest.approx(seen[0]) and seen == sorted(seen)
    assert m.itl_p50_ms <= m.itl_p95_ms and m.tok_s > 0 and m.peak_mem_mb > 0


def test_background_run_cancels_within_100ms_and_ends_cancelled(llama_tiny):
    """A long run (rotary positions: no length limit; GPT-2's would end at its 1,024 positions)."""
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    stream = al.generate(llama_tiny, "x", max_new_tokens=100_000, background=True, event_bus=bus)
    while len(stream.tokens) < 5:
        time.sleep(0.005)
    t = time.perf_counter()
    assert al.runs.cancel(stream.run)  # the path the panel's cancel takes
    stream.wait(timeout=5)
    elapsed_ms = (time.perf_counter() - t) * 1000
    assert stream.status == "cancelled" and rec[stream.run].end.status == "cancelled"
    assert elapsed_ms < 100, f"cancel took {elapsed_ms:.0f} ms"
    assert stream.run not in al.runs.live()


def test_background_iteration_follows_the_worker(gpt_tiny):
    stream = al.generate(gpt_tiny, "x", max_new_tokens=30, background=True)
    assert [t.i for t in stream] == list(range(30)) and stream.done


class _Exploding(torch.nn.Module):
    """Wraps a model and raises on the n-th forward call, to test failure mid-stream."""

    def __init__(self, inner, fail_at, exc=RuntimeError):
        super().__init__()
        self.inner, self.fail_at, self.calls, self.exc = inner, fail_at, 0, exc
        self.config = inner.config

    def forward(self, **kw):
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.exc("device fell over")
        return self.inner(**kw)


@pytest.mark.parametrize("background", [False, True])
def test_an_error_mid_stream_reaches_the_consumer_and_ends_the_run(gpt_tiny, background):
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    broken = al.models.ModelHandle(_Exploding(gpt_tiny.model, fail_at=4), gpt_tiny.tokenizer, "broken", "causal")
    stream = al.generate(broken, "x", max_new_tokens=50, background=background, event_bus=bus)
    got = []
    with pytest.raises(RuntimeError, match="device fell over"):
        for tok in stream:
            got.append(tok)
    assert len(got) == 3 and stream.status == "error"
    end = rec[stream.run].end
    assert end.status == "error" and "device fell over" in end.error


def test_keyboard_interrupt_ends_the_run_as_cancelled(gpt_tiny):
    """A kernel interrupt lands while the model computes (where a cell spends its time)."""
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    interrupted = al.models.ModelHandle(_Exploding(gpt_tiny.model, fail_at=3, exc=KeyboardInterrupt),
                                        gpt_tiny.tokenizer, "interrupted", "causal")
    stream = al.generate(interrupted, "x", max_new_tokens=50, event_bus=bus)
    got = []
    with pytest.raises(KeyboardInterrupt):
        for tok in stream:
            got.append(tok)
    assert len(got) == 2 and stream.status == "cancelled" and stream.done
    assert rec[stream.run].end.status == "cancelled" and rec[stream.run].end.error is None
    assert stream.run not in al.runs.live()


def test_cancel_from_another_thread_in_calling_thread_mode(llama_tiny):
    """Another thread cancels once tokens flow (not after a fixed delay: a busy CI machine may not have
    produced one yet); the loop in the calling thread stops at the next token."""
    bus = EventBus()
    started = threading.Event()
    bus.subscribe(lambda event: started.set() if isinstance(event, al.events.Token) else None)
    stream = al.generate(llama_tiny, "x", max_new_tokens=100_000, event_bus=bus)
    canceller = threading.Thread(target=lambda: started.wait(60) and stream.cancel())
    canceller.start()
    stream.wait()
    canceller.join()
    assert stream.status == "cancelled" and 0 < len(stream.tokens) < 100_000


@pytest.mark.parametrize("bad", [dict(max_new_tokens=0), dict(temperature=-1), dict(top_p=0), dict(top_k=-2),
                                 dict(nonsense=1)])
def test_bad_parameters_raise_one_clear_error(gpt_tiny, bad):
    with pytest.raises(GenerationConfigError):
        al.generate(gpt_tiny, "x", **bad)


def test_saved_output_has_a_static_summary(gpt_tiny):
    stream = al.generate(gpt_tiny, "x", max_new_tokens=5)
    stream.wait()
    html = stream._repr_html_()
    assert "starter:gpt-tiny" in html and "5 tokens" in html and "TTFT" in html


def _hf_greedy_batch(handle, prompts, n):
    tok = handle.tokenizer
    side, tok.padding_side = tok.padding_side, "left"
    try:
        enc = tok(prompts, return_tensors="pt", padding=True)
    finally:
        tok.padding_side = side
    out = handle.model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                pad_token_id=tok.pad_token_id)
    return out[:, enc["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("fixture", ["gpt_tiny", "llama_tiny"])
def test_a_batch_of_prompts_matches_transformers_batched_greedy(request, fixture):
    handle = request.getfixturevalue(fixture)
    prompts = ["Once upon a time", "The interpreter executes", "A"]
    streams = al.generate(handle, prompts, max_new_tokens=12, ignore_eos=True)
    assert isinstance(streams, list) and len({s.run for s in streams}) == 3
    ours = [s.wait().ids for s in streams]
    assert ours == _hf_greedy_batch(handle, prompts, 12)
    for s in streams:
        assert s.status == "ok" and s.metrics.tokens == 12


def test_cancelling_one_stream_of_a_batch_leaves_the_others_running(gpt_tiny):
    a, b = al.generate(gpt_tiny, ["one", "two"], max_new_tokens=40, ignore_eos=True)
    for tok in a:
        if tok.i == 3:
            a.cancel()
    assert a.status == "cancelled" and len(a.tokens) <= 5
    assert b.wait().status == "ok" and len(b.tokens) == 40


def _from_config(kind, tokenizer):
    """Tiny random Qwen2-style / T5 models around a starter tokenizer (the shapes differ, the engine must not care)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    v, eos = len(tokenizer), tokenizer.eos_token_id
    if kind == "qwen2":
        config = Qwen2Config(vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             eos_token_id=eos, bos_token_id=eos, pad_token_id=eos)
        return al.models.ModelHandle(Qwen2ForCausalLM(config).eval(), tokenizer, "tiny-qwen2", "causal")
    # eos is put on the last id so that greedy decoding runs the full length on both sides
    config = T5Config(vocab_size=v, d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4,
                      decoder_start_token_id=eos, pad_token_id=eos, eos_token_id=v - 1)
    return al.models.ModelHandle(T5ForConditionalGeneration(config).eval(), tokenizer, "tiny-t5", "seq2seq")


def test_greedy_matches_transformers_for_qwen2_style(llama_tiny):
    handle = _from_config("qwen2", llama_tiny.tokenizer)
    ours = al.generate(handle, "Once upon a time", max_new_tokens=16, ignore_eos=True).wait().ids
    assert ours == _hf_greedy(handle, "Once upon a time", 16)


def test_greedy_matches_transformers_for_t5(llama_tiny):
    handle = _from_config("t5", llama_tiny.tokenizer)
    prompt = "translate: the quick brown fox"
    ids = handle.tokenizer(prompt, return_tensors="pt").input_ids
    ref = handle.model.generate(ids, max_new_tokens=16, do_sample=False)[0, 1:].tolist()
    assert len(ref) == 16
    ours = al.generate(handle, prompt, max_new_tokens=16, ignore_eos=True).wait().ids
    assert ours == ref
    batch = al.generate(handle, [prompt, "a much longer second input that needs padding"], max_new_tokens=8,
                        ignore_eos=True)
    assert batch[0].wait().ids == ref[:8]


def test_the_consumer_never_stays_in_inference_mode(gpt_tiny):
    """Between tokens and after the end, the caller's thread is back in normal autograd mode."""
    stream = al.generate(gpt_tiny, "x", max_new_tokens=5, repetition_penalty=1.3, temperature=0.7, seed=0)
    for _ in stream:
        assert not torch.is_inference_mode_enabled()
    assert not torch.is_inference_mode_enabled()
    w = torch.ones(3, requires_grad=True)
    (w * 2).sum().backward()  # autograd still works in this thread
    assert w.grad is not None


def test_a_stop_string_spanning_tokens_ends_the_run_at_the_token_that_completes_it(gpt_tiny):
    full = al.generate(gpt_tiny, "The", max_new_tokens=40, ignore_eos=True).wait()
    pieces = [t.text for t in full.tokens]
    k = next(i for i in range(10, 39) if pieces[i] and pieces[i + 1])  # two non-empty pieces in a row
    stop = pieces[k][-1] + pieces[k + 1][:1]  # straddles the boundary between token k and k+1
    first = full.text.index(stop)
    stopped = al.generate(gpt_tiny, "The", max_new_tokens=40, ignore_eos=True, stop=stop).wait()
    assert stopped.status == "ok" and full.text.startswith(stopped.text)
    assert stop in stopped.text and stopped.text.index(stop) == first
    assert stop not in stopped.text[:-len(stopped.tokens[-1].text)]  # the last token completed it


def test_gpt2_stops_at_the_end_of_its_position_table_and_refuses_a_prompt_that_fills_it(gpt_tiny):
    """GPT-2's learned positions end at n_positions: the run ends there ("ok") instead of failing mid-stream
    with an index error, on every path (kernel, torch's, a batch); a prompt that fills the table is refused."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = gpt_tiny.tokenizer
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=40, vocab_size=len(tok))).eval()
    handle = al.models.ModelHandle(model, tok, "gpt2-40-positions", "causal")
    prompt_tokens = len(tok("Once upon a time")["input_ids"])
    for kw in ({}, {"cpu_kernel": False}):
        stream = al.generate(handle, "Once upon a time", max_new_tokens=1000, ignore_eos=True, **kw).wait()
        assert stream.status == "ok" and len(stream.ids) == 40 - prompt_tokens  # ids: not a held-back text tail
    rows = al.generate(handle, ["Once upon a time", "A"], max_new_tokens=1000, ignore_eos=True)
    assert all(r.wait().status == "ok" and len(r.ids) <= 40 - prompt_tokens for r in rows)
    with pytest.raises(al.errors.GenerationConfigError, match="reads at most 40.*shorten the prompt"):
        al.generate(handle, "word " * 60, max_new_tokens=5).wait()
