"""Models built from configs and starters, saved to disk and loaded back through ``al.models.load``."""

from __future__ import annotations

import gc

import pytest
import torch

import aigc_lab as al
from aigc_lab.models.compat import cache_kwargs, cache_of
from aigc_lab.models.starter import train_tokenizer

CORPUS = ["Once upon a time a tiny model learned to stream tokens, one at a time.",
          "The for statement is used to iterate over the elements of a sequence.",
          "3rd of March 2021 is 2021-03-03 and the 14th of July 1999 is 1999-07-14."] * 10


@pytest.fixture(scope="module")
def causal_tok():
    return train_tokenizer(CORPUS, 512)


@pytest.fixture(scope="module")
def seq2seq_tok():
    return train_tokenizer(CORPUS, 512, seq2seq=True)


def _engine(handle, prompt: str, max_new_tokens: int = 8) -> tuple[str, list[int | None]]:
    """Status and token ids of a greedy ``al.generate`` run, with the decode loop finalised before returning.

    The engine's decode generator can stay suspended inside ``torch.inference_mode()`` after a stream ends at
    EOS, which leaks inference mode into the caller until that generator is collected; collecting it here keeps
    later autograd (training) and ``model.generate`` calls in these tests independent of it.
    """
    stream = al.generate(handle, prompt, max_new_tokens=max_new_tokens).wait()
    result = stream.status, [t.id for t in stream.tokens]
    del stream
    gc.collect()
    return result


def _tiny(arch: str, tok):
    """A tiny model of ``arch`` built from its config (random weights), as a hub checkpoint would describe it."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, GPT2Config, LlamaConfig, Qwen2Config, T5Config

    v, eos, pad = len(tok), tok.eos_token_id, tok.pad_token_id
    if arch == "gpt2":
        config = GPT2Config(vocab_size=v, n_positions=128, n_embd=64, n_layer=2, n_head=4, bos_token_id=eos,
                            eos_token_id=eos)
    elif arch == "llama":
        config = LlamaConfig(vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                             bos_token_id=eos, eos_token_id=eos, pad_token_id=pad)
    elif arch == "qwen2":
        config = Qwen2Config(vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                             tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos)
    elif arch == "t5":
        config = T5Config(vocab_size=v, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                          pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad)
    else:
        config = al.models.LSTMConfig(vocab_size=v, hidden_size=64, num_hidden_layers=2, eos_token_id=eos)
    auto = AutoModelForSeq2SeqLM if arch == "t5" else AutoModelForCausalLM
    torch.manual_seed(0)
    return auto.from_config(config).eval()


def _logits(model, tok, kind: str):
    enc = tok("The for statement iterates", return_tensors="pt")
    with torch.inference_mode():
        if kind == "seq2seq":
            dec = torch.tensor([[model.config.decoder_start_token_id, 5, 6]])
            return model(**enc, decoder_input_ids=dec).logits
        return model(input_ids=enc["input_ids"]).logits


@pytest.mark.parametrize(("arch", "kind"), [("gpt2", "causal"), ("llama", "causal"), ("qwen2", "causal"),
                                            ("t5", "seq2seq"), ("lstm", "rnn")])
def test_save_pretrained_folder_loads_back_with_identical_logits(tmp_path, arch, kind, causal_tok, seq2seq_tok):
    tok = seq2seq_tok if kind == "seq2seq" else causal_tok
    model = _tiny(arch, tok)
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    handle = al.models.load(str(tmp_path))
    assert handle.kind == kind and handle.name == str(tmp_path)
    assert handle.params == sum(p.numel() for p in model.parameters())
    assert handle.dtype == "float32" and handle.device == "cpu" and handle.quant is None
    assert type(handle.model) is type(model)
    assert torch.equal(_logits(model, tok, kind), _logits(handle.model, handle.tokenizer, kind))
    status, ids = _engine(handle, "Once upon a time", max_new_tokens=4)
    assert status == "ok" and len([i for i in ids if i is not None]) >= 1


def test_dtype_and_device_are_applied_and_recorded(tmp_path, causal_tok):
    model = _tiny("llama", causal_tok)
    model.save_pretrained(tmp_path)
    causal_tok.save_pretrained(tmp_path)
    handle = al.models.load(tmp_path, dtype="bfloat16", device="cpu")
    assert handle.dtype == "bfloat16" and handle.device == "cpu"
    assert handle.info().dtype == "bfloat16"


# -- starter models built from the bundled Python docs ---------------------------------------------------------

@pytest.fixture(scope="module")
def docs():
    return al.data.samples.python_docs()


def _date_pairs():
    months = ["January", "March", "July", "October"]
    return [(f"{d} {m} {y}", f"{y}-{i * 3 + 1:02d}-{d:02d}") for i, m in enumerate(months)
            for d, y in ((3, 2021), (14, 1999))]


@pytest.fixture(scope="module")
def starters(docs):
    """One tiny starter per architecture, tokenizer trained on the Python docs (built once for this module)."""
    return {arch: al.models.build_starter(f"starter:{arch}-tiny", docs, seed=1) for arch in ("gpt", "llama", "t5",
                                                                                             "lstm")}


@pytest.mark.parametrize(("arch", "kind"), [("gpt", "causal"), ("llama", "causal"), ("t5", "seq2seq"),
                                            ("lstm", "rnn")])
def test_starter_from_python_docs_round_trips_and_generates(tmp_path, starters, arch, kind):
    name = f"starter:{arch}-tiny"
    handle = starters[arch]
    assert handle.kind == kind and handle.name == name
    assert 3e6 < handle.params < 8e6, handle.params  # "tiny" is about 5M parameters
    tok = handle.tokenizer
    assert tok.decode(tok("The for statement")["input_ids"], skip_special_tokens=True) == "The for statement"
    folder = handle.save(tmp_path / arch)
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    back = al.models.load(folder)
    assert back.kind == kind and back.params == handle.params
    assert torch.equal(_logits(handle.model, tok, kind), _logits(back.model, back.tokenizer, kind))
    a_status, a = _engine(handle, "The for statement")
    b_status, b = _engine(back, "The for statement")
    assert a_status == b_status == "ok"
    assert 1 <= len([i for i in a if i is not None]) <= 8
    assert a == b


def _train_a_little(handle, pairs, steps: int = 20):
    """A few AdamW steps so greedy decoding produces varied tokens (a random T5 repeats its start token)."""
    tok, model = handle.tokenizer, handle.model
    enc = tok([p for p, _ in pairs], return_tensors="pt", padding=True)
    labels = tok([t for _, t in pairs], return_tensors="pt", padding=True)["input_ids"]
    labels[labels == tok.pad_token_id] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster, and much faster on a shared, busy machine
    model.train()
    try:
        for _ in range(steps):
            loss = model(**enc, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        model.eval()
        torch.set_num_threads(threads)
    return float(loss.detach())


def test_t5_starter_engine_greedy_matches_hf_generate(starters):
    import copy

    handle = copy.copy(starters["t5"])
    handle.model = copy.deepcopy(handle.model)  # trained below: leave the shared one untouched
    tok = handle.tokenizer
    assert tok.pad_token_id == handle.model.config.decoder_start_token_id == 0 and tok.eos_token_id == 1
    assert tok("3 March 2021")["input_ids"][-1] == tok.eos_token_id  # T5-style: inputs end with the end token
    pairs = _date_pairs()
    assert _train_a_little(handle, pairs) < 3.0
    for prompt, _ in pairs[:3]:
        ours = [i for i in _engine(handle, prompt)[1] if i is not None]
        enc = tok(prompt, return_tensors="pt")
        with torch.inference_mode():
            hf = handle.model.generate(**enc, max_new_tokens=8, do_sample=False)[0].tolist()
        hf = [i for i in hf[1:] if i != tok.pad_token_id]  # drop the decoder start and any padding after eos
        assert ours == hf, (prompt, ours, hf)
        assert len(set(ours)) > 1  # a real check: not one token repeated


def test_lstm_follows_the_causal_contract(starters):
    handle = starters["lstm"]
    model, tok = handle.model, handle.tokenizer
    ids = tok("The for statement is used to iterate", return_tensors="pt")["input_ids"]
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, ids.shape[1], len(tok)) and out.loss is not None and out.loss.requires_grad
    h, c = cache_of(out)
    assert h.shape == c.shape == (model.config.num_hidden_layers, 1, model.config.hidden_size)
    # feeding the state back equals running the whole sequence at once
    first = model(input_ids=ids[:, :-1], use_cache=True)
    step = model(input_ids=ids[:, -1:], **cache_kwargs(cache_of(first)))
    torch.testing.assert_close(step.logits[:, -1], out.logits[:, -1])
    # engine greedy decoding equals transformers' generate
    ours = [i for i in _engine(handle, "The for statement")[1] if i is not None]
    enc = tok("The for statement", return_tensors="pt")
    with torch.inference_mode():
        hf = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert ours == hf[0, enc["input_ids"].shape[1]:].tolist()[:len(ours)]


def test_every_starter_size_is_about_its_nominal_size():
    for name in al.models.starter_names():
        est = al.models.estimate_memory(name)
        nominal = {"tiny": 5e6, "small": 30e6, "base": 120e6}[name.rsplit("-", 1)[1]]
        assert 0.7 * nominal < est.params < 1.4 * nominal, (name, est.params)
