"""Structured pruning (``al.prune``): a smaller dense model that plain transformers reloads, cut by measured
importance, equal to the original with the removed parts masked, measured before/after, recovered by distillation."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import aigc_lab as al
from aigc_lab.bus import EventBus, Recorder
from aigc_lab.errors import AigcLabError, PruneError
from aigc_lab.infer import STEPPERS
from aigc_lab.infer.backends import plan
from aigc_lab.infer.stepper import DecodeRequest
from aigc_lab.models import ModelHandle
from aigc_lab.models.prune import PrunedModel, prune_model

TEXTS = al.data.samples.python_docs()[:16]
CAL = 512  # calibration tokens: enough to rank blocks and neurons of these tiny models
IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 64, 11, 300, 23, 8]])


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def gpt(gpt_tiny):
    """A small GPT-2 (4 blocks of width 64) on ``starter:gpt-tiny``'s tokenizer: the starter's shape, less compute."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(gpt_tiny.tokenizer), n_positions=256, n_embd=64, n_layer=4, n_head=4,
                        bos_token_id=0, eos_token_id=0)
    return ModelHandle(GPT2LMHeadModel(config).eval(), gpt_tiny.tokenizer, "gpt", "causal")


def gqa_llama(tok, layers=4):
    """A tiny Llama with grouped-query attention (4 query heads over 2 key/value heads)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return ModelHandle(LlamaForCausalLM(config).eval(), tok, "gqa-llama", "causal")


def masked(handle, pruned):
    """The original model with everything the plan removed zeroed in place of being cut: dropped blocks' output
    projections (a pre-norm residual block with zero outputs is the identity), dropped neurons' output weights,
    dropped heads' output columns. A correct prune computes exactly this function."""
    p = pruned.plan
    model = copy.deepcopy(handle.model)
    gpt2 = p.arch == "gpt2"
    blocks = model.transformer.h if gpt2 else model.model.layers
    with torch.no_grad():
        for i, block in enumerate(blocks):
            attn_out = block.attn.c_proj if gpt2 else block.self_attn.o_proj
            mlp_out = block.mlp.c_proj if gpt2 else block.mlp.down_proj
            if i not in p.kept_blocks:
                for layer in (attn_out, mlp_out):
                    layer.weight.zero_()
                    if layer.bias is not None:
                        layer.bias.zero_()
                continue
            j = p.kept_blocks.index(i)
            gone = torch.ones(p.mlp[0], dtype=torch.bool)
            gone[p.neurons[j]] = False
            if gpt2:
                mlp_out.weight[gone, :] = 0.0  # Conv1D: [in, out]
            else:
                mlp_out.weight[:, gone] = 0.0
                d = model.config.head_dim
                group = p.heads[0] // p.kv_heads[0]
                for g in range(p.kv_heads[0]):
                    if g not in p.groups[j].tolist():
                        attn_out.weight[:, g * group * d:(g + 1) * group * d] = 0.0
    return model


def reload(pruned, tmp_path):
    pruned.save(tmp_path)
    return AutoModelForCausalLM.from_pretrained(tmp_path).eval(), AutoTokenizer.from_pretrained(tmp_path)


def test_gpt2_pruned_is_a_plain_transformers_model_equal_to_the_masked_original(gpt_tiny, tmp_path):
    before = {k: v.clone() for k, v in gpt_tiny.model.state_dict().items()}
    pruned = prune_model(gpt_tiny, TEXTS, drop_blocks=1, mlp_ratio=0.5, calibration_tokens=CAL)
    assert isinstance(pruned, PrunedModel) and pruned.params < gpt_tiny.params
    cfg = pruned.model.config
    assert (cfg.n_layer, cfg.n_inner, cfg.n_head, cfg.n_embd) == (3, 512, 4, 256)
    assert all(b.mlp.c_fc.weight.shape == (256, 512) for b in pruned.model.transformer.h)
    assert len(pruned.plan.kept_blocks) == 3 and len(pruned.plan.dropped_blocks) == 1
    torch.testing.assert_close(logits(pruned.model), logits(masked(gpt_tiny, pruned)), atol=1e-4, rtol=1e-4)
    model, tok = reload(pruned, tmp_path)
    assert type(model).__name__ == "GPT2LMHeadModel" and torch.equal(logits(model), logits(pruned.model))
    assert tok("def f(x): return x")["input_ids"] == gpt_tiny.tokenizer("def f(x): return x")["input_ids"]
    assert all(torch.equal(before[k], v) for k, v in gpt_tiny.model.state_dict().items())  # original untouched


def test_llama_gqa_prunes_whole_kv_groups_and_reloads(llama_tiny, tmp_path):
    handle = gqa_llama(llama_tiny.tokenizer)
    pruned = prune_model(handle, TEXTS, drop_blocks=1, mlp_ratio=0.5, heads_ratio=0.5, calibration_tokens=CAL)
    cfg = pruned.model.config
    assert (cfg.num_hidden_layers, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.head_dim, cfg.hidden_size) == (3, 64, 2, 1, 16, 64)
    attn = pruned.model.model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (32, 64) and attn.k_proj.weight.shape == (16, 64)
    assert attn.o_proj.weight.shape == (64, 32)
    torch.testing.assert_close(logits(pruned.model), logits(masked(handle, pruned)), atol=1e-4, rtol=1e-4)
    model, _ = reload(pruned, tmp_path)
    assert torch.equal(logits(model), logits(pruned.model))


def test_starter_llama_prunes_heads_and_reloads(llama_tiny, tmp_path):
    pruned = prune_model(llama_tiny, TEXTS, drop_blocks=2, mlp_ratio=0.25, heads_ratio=0.5, calibration_tokens=CAL)
    cfg = pruned.model.config
    assert (cfg.num_hidden_layers, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.head_dim) == (2, 160, 2, 2, 64)
    torch.testing.assert_close(logits(pruned.model), logits(masked(llama_tiny, pruned)), atol=1e-4, rtol=1e-4)
    model, _ = reload(pruned, tmp_path)
    assert torch.equal(logits(model), logits(pruned.model))


@pytest.mark.parametrize("model_type", ["mistral", "qwen2", "qwen3"])
def test_the_rest_of_the_llama_family_prunes_and_reloads(model_type, llama_tiny, tmp_path):
    """Mistral, Qwen2 (q/k/v biases, layer_types) and Qwen3 (per-head q/k norms) share the Llama layout."""
    from transformers import AutoConfig

    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=len(llama_tiny.tokenizer), hidden_size=64,
                                  intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=16, max_position_embeddings=128)
    handle = ModelHandle(AutoModelForCausalLM.from_config(config).eval(), llama_tiny.tokenizer, model_type, "causal")
    pruned = prune_model(handle, TEXTS, drop_blocks=1, mlp_ratio=0.5, heads_ratio=0.5, calibration_tokens=CAL)
    torch.testing.assert_close(logits(pruned.model), logits(masked(handle, pruned)), atol=1e-4, rtol=1e-4)
    model, _ = reload(pruned, tmp_path)
    assert model.config.model_type == model_type and model.config.num_key_value_heads == 1
    assert torch.equal(logits(model), logits(pruned.model))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_ratio_one_keeps_the_model_exactly(arch, gpt, llama_tiny):
    handle = gpt if arch == "gpt2" else gqa_llama(llama_tiny.tokenizer)
    same = prune_model(handle, TEXTS, drop_blocks=0, mlp_ratio=1.0, heads_ratio=1.0, calibration_tokens=CAL)
    assert same.params == handle.params and torch.equal(logits(same.model), logits(handle.model))
    assert same.model is not handle.model


def test_the_block_that_barely_changes_its_input_is_dropped_first(gpt):
    handle = ModelHandle(copy.deepcopy(gpt.model), gpt.tokenizer, "gpt", "causal")
    natural = prune_model(handle, TEXTS, drop_blocks=1, mlp_ratio=1.0, calibration_tokens=CAL).plan
    target = 1 if natural.dropped_blocks != (1,) else 2  # a block measurement alone would keep
    with torch.no_grad():
        block = handle.model.transformer.h[target]
        for layer in (block.attn.c_proj, block.mlp.c_proj):
            layer.weight.mul_(1e-4)
            layer.bias.mul_(1e-4)
    p = prune_model(handle, TEXTS, drop_blocks=1, mlp_ratio=1.0, calibration_tokens=CAL).plan
    assert p.dropped_blocks == (target,)
    assert min(range(4), key=lambda i: p.block_influence[i]) == target and p.block_influence[target] < 1e-3
    assert p.calibration_tokens > 0


def test_neurons_and_groups_that_contribute_nothing_are_the_ones_removed(llama_tiny):
    """Zero the output weights of half of every MLP's neurons and of one kv group's heads: importance must pick
    exactly those, so removing them leaves the logits unchanged."""
    handle = gqa_llama(llama_tiny.tokenizer, layers=2)
    with torch.no_grad():
        for layer in handle.model.model.layers:
            layer.mlp.down_proj.weight[:, 1::2] = 0.0  # odd neurons
            layer.self_attn.o_proj.weight[:, :32] = 0.0  # kv group 0 (query heads 0 and 1)
    pruned = prune_model(handle, TEXTS, drop_blocks=0, mlp_ratio=0.5, heads_ratio=0.5, calibration_tokens=CAL)
    assert all(n.tolist() == list(range(0, 128, 2)) for n in pruned.plan.neurons)
    assert all(g.tolist() == [1] for g in pruned.plan.groups)
    torch.testing.assert_close(logits(pruned.model), logits(handle.model), atol=1e-5, rtol=1e-5)


def test_pruned_llama_decodes_identically_on_every_stepper(llama_tiny):
    """Heads removed leave hidden_size != heads * head_dim: every decode path must handle that shape."""
    pruned = prune_model(gqa_llama(llama_tiny.tokenizer, layers=3), TEXTS, drop_blocks=1, mlp_ratio=0.5,
                         heads_ratio=0.5, calibration_tokens=CAL)
    ids = pruned.tokenizer("Once upon a time", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = pruned.model.generate(ids, max_new_tokens=10, min_new_tokens=10, do_sample=False,
                                    pad_token_id=0)[0, ids.shape[1]:].tolist()
    tried = set()
    for cpu_kernel in (True, False):
        request = DecodeRequest(batch=1, cpu_kernel=cpu_kernel)
        layers = plan(pruned, request).layers.model
        for entry in STEPPERS:
            if entry.refusal(pruned, layers, request) is None:
                out = al.generate(pruned, "Once upon a time", max_new_tokens=10, ignore_eos=True,
                                  cpu_kernel=cpu_kernel, stepper=entry.name, event_bus=EventBus()).wait()
                assert out.ids == ref, (entry.name, cpu_kernel)
                tried.add(entry.name)
    assert {"fused-llama", "lean-llama", "forward"} <= tried


def test_what_cannot_be_pruned_is_refused_before_any_work(gpt, llama_tiny):
    from transformers import T5Config, T5ForConditionalGeneration

    t5 = ModelHandle(T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=32, d_ff=64, d_kv=8, num_layers=1,
                                                         num_heads=4)), llama_tiny.tokenizer, "t5", "seq2seq")
    lstm = al.models.build_starter("starter:lstm-tiny", ["a small corpus for the recurrent model"] * 20)
    for handle in (t5, lstm):
        with pytest.raises(PruneError, match="cannot prune.*GPT-2 and the Llama family"):
            al.prune(handle, TEXTS)
    # data=None would fail later: every one of these must fail on its own check first
    cases = [
        (al.quantize(gpt, "bf16"), {}, "quantized"),
        (gpt, {"heads_ratio": 0.5}, "GPT-2's attention width"),
        (gpt, {"mlp_ratio": 0}, "mlp_ratio must be a fraction"),
        (gpt, {"mlp_ratio": 1.5}, "mlp_ratio must be a fraction"),
        (llama_tiny, {"heads_ratio": -1}, "heads_ratio must be a fraction"),
        (gpt, {"drop_blocks": 4}, "drop_blocks must be a whole number from 0 to 3"),
        (gpt, {"drop_blocks": 1, "keep_blocks": [0]}, "not both"),
        (gpt, {"keep_blocks": [0, 4]}, "keep_blocks must be distinct block indices in 0..3"),
        (gpt, {"calibration_tokens": 0}, "calibration_tokens"),
        ("starter:gpt-tiny", {}, "ModelHandle"),
    ]
    for handle, kw, match in cases:
        with pytest.raises(PruneError, match=match):
            al.prune(handle, None, **kw)
    with pytest.raises(PruneError, match="calibration data must be"):
        al.prune(gpt, [1, 2, 3])
    with pytest.raises(PruneError, match="held-out"):
        al.prune(gpt, TEXTS[:1])
    assert issubclass(PruneError, AigcLabError) and issubclass(PruneError, ValueError)


def test_report_measures_both_models_the_same_way(gpt, monkeypatch):
    monkeypatch.setattr("aigc_lab.bench.pruning.ROUNDS", 1)
    rows = [t[:400] for t in TEXTS + al.data.samples.python_docs()[16:20]]
    splits = al.data.load(rows, event_bus=EventBus()).split(val=0.2, test=0.0, seed=0)
    pruned = al.prune(gpt, splits, drop_blocks=2, mlp_ratio=0.5, prompt="The interpreter", decode_tokens=8,
                      calibration_tokens=CAL)
    r = pruned.report
    assert r.before.params == gpt.params and r.after.params == pruned.params < r.before.params
    assert r.after.memory_mb / r.before.memory_mb == pytest.approx(r.after.params / r.before.params, rel=0.02)
    assert r.before.tok_s > 0 and r.after.tok_s > 0
    assert r.before.ppl > 1 and r.after.ppl > 1 and r.eval_rows == len(splits.val)
    assert r.before.ppl == pytest.approx(al.bench.text_perplexity(gpt, splits.val.combined_text().tolist(),
                                                                  max_length=256))
    table = r.table()
    assert table.loc["parameters", "after / before"] == pytest.approx(r.after.params / r.before.params)
    text, page = str(r), pruned._repr_html_()
    assert "decode tokens/s" in text and "perplexity" in text and "method='distill'" in text
    assert "<table" in page and "blocks kept" in page


def test_distillation_from_the_original_recovers_the_pruned_model(gpt, tmp_path):
    pruned = al.prune(gpt, TEXTS, drop_blocks=2, mlp_ratio=0.5, report=False, calibration_tokens=CAL)
    assert pruned.report is None
    teacher_state = {k: v.clone() for k, v in gpt.model.state_dict().items()}
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    run = al.finetune(pruned, TEXTS[:12], method="distill", teacher=gpt, val=TEXTS[12:], max_steps=8,
                      eval_every=4, lr=3e-3, alpha=0.5, progress=False, batch_size=4, max_length=32, event_bus=bus,
                      output_dir=tmp_path).wait()
    assert run.status == "ok" and run.history.loss.iloc[-1] < run.history.loss.iloc[0]
    record = rec.runs[run.run]
    assert len(record.steps) == 8 and len(record.evals) >= 2  # the panel's recovery curve: loss and val ppl
    assert record.evals[-1].val_loss < record.evals[0].val_loss
    assert run.model.model.config.n_layer == 2
    assert all(torch.equal(teacher_state[k], v) for k, v in gpt.model.state_dict().items())
