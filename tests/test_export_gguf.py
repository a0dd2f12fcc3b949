"""GGUF export, checked by the real llama.cpp (llama-cpp-python): loads, tokenizes, decodes like our engine.

Every test that needs llama.cpp FAILS (never skips) when llama-cpp-python is missing, saying how to install it.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
from export_models import CHINESE, CORPUS, ENGLISH, HELD_OUT, PROMPTS, engine_greedy, trained_starter

import aigc_lab as al
from aigc_lab.bench.quality import greedy_agreement
from aigc_lab.errors import ExportError
from aigc_lab.export import gguf as gguf_target
from aigc_lab.models import ModelHandle

QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q6_k")
# K-quants (llama.cpp's own quantizer): the block type each must write, and its greedy-agreement / perplexity
# bounds: q4_k_m (about 4.8 bits a weight) q4_0's; q6_k (6.56 bits) between q4_0's and q8_0's
K_CHECKS = {"q4_k_m": ("Q4_K", 0.70, 0.05), "q6_k": ("Q6_K", 0.80, 0.02)}
N_NEW = 24
INSTALL = ("llama-cpp-python is not installed, and the GGUF export is verified by llama.cpp itself: run `make setup` "
           "(it builds llama.cpp for this CPU: tools/llama_cmake_args.sh)")


def llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        pytest.fail(INSTALL, pytrace=False)
    return llama_cpp


def load(path, **kwargs):
    """A llama.cpp model on 2 threads that keeps every position's logits (``scores``)."""
    return llama_cpp().Llama(model_path=str(path), n_ctx=512, n_threads=2, n_threads_batch=2, logits_all=True,
                             verbose=False, **kwargs)


def llama_greedy(llm, prompt: str, n: int) -> list[int]:
    """Greedy decoding from llama.cpp's own logits (argmax of each step's scores)."""
    llm.reset()
    llm.eval(llm.tokenize(prompt.encode(), add_bos=True, special=False))
    out = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out


def llama_ppl(llm, text: str) -> float:
    """Perplexity of ``text`` computed from llama.cpp's logits at every position."""
    ids = llm.tokenize(text.encode(), add_bos=True, special=False)
    llm.reset()
    llm.eval(ids)
    logits = np.asarray(llm.scores[: len(ids) - 1], dtype=np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    return math.exp(-logp[np.arange(len(ids) - 1), ids[1:]].mean())


@pytest.fixture(scope="module", params=["gpt", "llama"])
def trained(request, tmp_path_factory):
    """A briefly trained ``starter:<arch>-tiny`` and its GGUF exports at every precision."""
    out = tmp_path_factory.mktemp(f"gguf-{request.param}")
    handle = trained_starter(f"starter:{request.param}-tiny", out / "run").model
    files = {q: al.export(handle, "gguf", out / q / "model.gguf", quant=q, progress=False) for q in QUANTS}
    return handle, files


def test_llama_cpp_loads_every_precision(trained):
    handle, files = trained
    for quant, result in files.items():
        llm = load(result.path)
        assert llm.n_vocab() == handle.model.config.vocab_size, quant
        assert llm.metadata["general.architecture"] == {"gpt2": "gpt2", "llama": "llama"}[
            handle.model.config.model_type]
        llm.eval(llm.tokenize(b"The for statement"))
        assert np.isfinite(llm.scores[llm.n_tokens - 1]).all(), quant
        print(f"{quant}: {result.size_mb:.2f} MB, {result.details['tensors']} tensors, "
              f"kept higher: {result.details['kept_at_higher_precision']}")


def test_llama_cpp_tokenizes_english_and_chinese_like_our_tokenizer(trained):
    handle, files = trained
    tok = handle.tokenizer
    llm = load(files["f32"].path)
    chat = tok.apply_chat_template([{"role": "user", "content": CHINESE[0]}], tokenize=False,
                                   add_generation_prompt=True)
    for text in [*ENGLISH, *CHINESE, "  two  spaces\n\nand tabs\t!", "mixed 中文 and English 123"]:
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == tok(text)["input_ids"], text
    assert llm.tokenize(chat.encode(), add_bos=True, special=True) == tok(chat)["input_ids"]
    assert len(tok(CHINESE[1])["input_ids"]) < len(CHINESE[1].encode()), "no Chinese merges learned: weak test"


def test_greedy_tokens_equal_our_engine_at_f32_and_f16(trained):
    handle, files = trained
    for quant in ("f32", "f16"):
        llm = load(files[quant].path)
        for prompt in PROMPTS:
            ours = engine_greedy(handle, prompt, N_NEW)
            theirs = llama_greedy(llm, prompt, N_NEW)
            print(quant, repr(prompt), repr(handle.tokenizer.decode(ours)))
            assert theirs == ours, (quant, prompt)
    assert len(set(ours)) > 4, "degenerate greedy output: the fixture model is not trained enough"


def test_q8_0_and_q4_0_agree_with_f32_and_keep_perplexity(trained):
    handle, files = trained
    reference = {p: engine_greedy(handle, p, N_NEW) for p in PROMPTS}
    ppl = {q: llama_ppl(load(files[q].path), HELD_OUT) for q in ("f32", "q8_0", "q4_0")}
    for quant, min_agree, max_ppl_change in (("q8_0", 0.90, 0.01), ("q4_0", 0.70, 0.05)):
        llm = load(files[quant].path)
        agree = statistics.mean(greedy_agreement(reference[p], llama_greedy(llm, p, N_NEW)) for p in PROMPTS)
        change = abs(ppl[quant] / ppl["f32"] - 1)
        print(f"{quant}: greedy agreement {agree:.3f}, ppl {ppl[quant]:.3f} vs f32 {ppl['f32']:.3f} "
              f"({100 * change:.2f}%)")
        assert agree >= min_agree, (quant, agree)
        assert change <= max_ppl_change, (quant, ppl)


def test_k_quants_are_written_by_llama_cpps_quantizer_and_keep_agreement_and_perplexity(trained):
    from collections import Counter

    import gguf

    handle, files = trained
    reference = {p: engine_greedy(handle, p, N_NEW) for p in PROMPTS}
    ppl_f32 = llama_ppl(load(files["f32"].path), HELD_OUT)
    for quant, (block, min_agree, max_ppl_change) in K_CHECKS.items():
        result = files[quant]
        types = Counter(t.tensor_type.name for t in gguf.GGUFReader(result.path).tensors)
        llm = load(result.path)
        agree = statistics.mean(greedy_agreement(reference[p], llama_greedy(llm, p, N_NEW)) for p in PROMPTS)
        ppl = llama_ppl(llm, HELD_OUT)
        change = abs(ppl / ppl_f32 - 1)
        print(f"{quant}: {result.size_mb:.2f} MB (q8_0 {files['q8_0'].size_mb:.2f}), tensor types {dict(types)}, "
              f"greedy agreement {agree:.3f}, ppl {ppl:.3f} vs f32 {ppl_f32:.3f} ({100 * change:.2f}%)")
        assert types[block] > 0, f"{quant} holds no {block} tensor: {dict(types)}"
        assert result.size_mb < files["q8_0"].size_mb, quant
        assert agree >= min_agree, (quant, agree)
        assert change <= max_ppl_change, (quant, ppl, ppl_f32)


def test_chat_template_and_every_eos_id_are_read_back_by_llama_cpp(trained):
    handle, files = trained
    lc = llama_cpp()
    eos = list(handle.model.generation_config.eos_token_id)
    assert len(eos) >= 2 and handle.tokenizer.chat_template
    for quant in ("f32", "q4_0", "q4_k_m"):  # q4_k_m: the metadata survives llama.cpp's quantizer
        llm = load(files[quant].path)
        meta = llm.metadata
        assert meta.get("tokenizer.chat_template") == handle.tokenizer.chat_template, "chat template not embedded"
        stored = [int(meta[k]) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                         "tokenizer.ggml.eom_token_id") if k in meta]
        assert sorted(stored) == sorted(eos), f"eos ids in the file {stored}, generation_config {eos}"
        vocab = lc.llama_model_get_vocab(llm.model)
        assert all(lc.llama_vocab_is_eog(vocab, i) for i in eos)
    modelfile = files["f32"].files[1].read_text()
    assert modelfile.startswith("FROM ./model.gguf\n")
    for i in eos:
        assert f'PARAMETER stop "{handle.tokenizer.convert_ids_to_tokens(i)}"' in modelfile
    assert files["f32"].command == f"ollama create model -f {files['f32'].files[1]}"


def _tiny(model_type: str, tok, seed: int = 0) -> ModelHandle:
    """A random-weight Mistral / Qwen2 / Qwen3 with grouped-query attention (and Qwen's biases or q/k norms)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(model_type, vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                               max_position_embeddings=256, tie_word_embeddings=model_type != "mistral",
                               eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)  # zero biases / unit norms would hide a wrong map
    return ModelHandle(model=model, tokenizer=tok, name=f"tiny-{model_type}", kind="causal")


@pytest.mark.parametrize("model_type", ["mistral", "qwen2", "qwen3"])
def test_llama_family_architectures_decode_like_our_engine(model_type, tmp_path, llama_tiny):
    handle = _tiny(model_type, llama_tiny.tokenizer)
    result = al.export(handle, "gguf", tmp_path / "m.gguf", quant="f32", progress=False)
    llm = load(result.path)
    assert llm.metadata["general.architecture"] == {"mistral": "llama"}.get(model_type, model_type)
    for prompt in PROMPTS[:2]:
        assert llama_greedy(llm, prompt, 12) == engine_greedy(handle, prompt, 12), prompt


def test_a_lora_model_is_merged_into_the_gguf_and_the_callers_model_is_untouched(tmp_path, llama_tiny):
    from aigc_lab.models.handle import shared_copy
    from aigc_lab.train.config import TrainConfig
    from aigc_lab.train.lora import apply_lora

    peft = apply_lora(shared_copy(llama_tiny.model), "causal", TrainConfig.from_kwargs("lora", {}))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # B starts at zero: make the adapters change the outputs
    peft.eval()
    ids = llama_tiny.tokenizer("The for statement", return_tensors="pt")["input_ids"]

    def greedy(model):
        with torch.no_grad():
            return model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:].tolist()

    base, adapted = greedy(llama_tiny.model), greedy(peft)
    assert adapted != base
    handle = ModelHandle(model=peft, tokenizer=llama_tiny.tokenizer, name="lora", kind="causal")
    llm = load(al.export(handle, "gguf", tmp_path / "lora.gguf", quant="f32", progress=False).path)
    assert llama_greedy(llm, "The for statement", 12) == adapted
    assert greedy(llama_tiny.model) == base and greedy(peft) == adapted  # merged on a copy: nothing changed here
    assert any("lora_A" in n for n, _ in peft.named_parameters())


def test_what_cannot_be_exported_is_refused_before_anything_is_written(tmp_path, gpt_tiny):
    from transformers import T5Config, T5ForConditionalGeneration

    t5 = ModelHandle(T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=16, d_ff=32, num_layers=1,
                                                         num_heads=2, d_kv=8)), gpt_tiny.tokenizer, "t5", "seq2seq")
    cases = [
        (lambda: al.export(gpt_tiny, "gguf", tmp_path / "a.gguf", quant="q3_k"), "quant='q3_k'"),
        (lambda: al.export(gpt_tiny, "gguf", tmp_path / "a.bin"), "ends in .gguf"),
        (lambda: al.export(gpt_tiny, "onnx", tmp_path / "a"), "unknown export target"),
        (lambda: al.export(gpt_tiny, "gguf", tmp_path / "a.gguf", dtype="float16"), "takes no option dtype"),
        (lambda: al.export(t5, "gguf", tmp_path / "a.gguf"), "decoder-only"),
        (lambda: al.export(al.quantize(gpt_tiny, "int8"), "gguf", tmp_path / "a.gguf"), "quantized in torch"),
        (lambda: al.export(gpt_tiny, "adapter", tmp_path / "a"), "needs a LoRA model"),
    ]
    for call, message in cases:
        with pytest.raises(ExportError, match=message):
            call()
    tok = gpt_tiny.tokenizer
    spaced = ModelHandle(gpt_tiny.model, type(tok)(tokenizer_object=_with_prefix_space(tok.backend_tokenizer),
                                                   eos_token=tok.eos_token), "spaced", "causal")
    with pytest.raises(ExportError, match="prefix space"):
        al.export(spaced, "gguf", tmp_path / "a.gguf")
    assert list(tmp_path.iterdir()) == []


def _with_prefix_space(backend):
    from tokenizers import Tokenizer, pre_tokenizers

    tok = Tokenizer.from_str(backend.to_str())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    return tok


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, gpt_tiny, monkeypatch):
    path = tmp_path / "m.gguf"
    al.export(gpt_tiny, "gguf", path, quant="f16", modelfile=False, progress=False)
    before = path.read_bytes()
    calls = []

    def failing(values, qtype):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # an interrupt mid-file
        return real(values, qtype)

    real = gguf_target._encode
    monkeypatch.setattr(gguf_target, "_encode", failing)
    with pytest.raises(KeyboardInterrupt):
        al.export(gpt_tiny, "gguf", path, quant="f32", progress=False)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


def test_export_is_callable_however_the_package_was_imported(tmp_path, gpt_tiny):
    import aigc_lab.export.gguf  # noqa: F401  (binds the package as aigc_lab.export before al.export is read)

    result = al.export(gpt_tiny, "gguf", tmp_path / "x.gguf", quant="q8_0", system="Be brief.", ollama_name="tiny",
                       progress=False)
    assert result.command == f"ollama create tiny -f {tmp_path / 'Modelfile'}"
    assert 'SYSTEM """Be brief."""' in (tmp_path / "Modelfile").read_text()
    assert "ollama create tiny" in str(result) and result.details["quant"] == "q8_0"


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2"])
def test_llama3_and_qwen2_style_pre_tokenizers_tokenize_like_llama_cpp(pre, tmp_path):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from aigc_lab.export.gguf_vocab import KNOWN_SPLITS

    regex, ignore_merges = next((r, ig) for r, (name, ig) in KNOWN_SPLITS.items() if name == pre)
    backend = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                            show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64,
                                       eos_token_id=tok.eos_token_id))
    result = al.export(ModelHandle(model, tok, pre, "causal"), "gguf", tmp_path / "t.gguf", progress=False)
    assert result.details["pre_tokenizer"] == pre
    llm = load(result.path)
    for text in [*ENGLISH, *CHINESE, "numbers 1234567 and  spaces\n\n\tend", "I'LL say it's DONE"]:
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == tok(text)["input_ids"], text
