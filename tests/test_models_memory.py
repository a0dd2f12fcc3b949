"""Memory estimates before loading, the catalog table, and the too-large check before any allocation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import aigc_lab as al
from aigc_lab.errors import ModelTooLargeError
from aigc_lab.models import memory

# public parameter counts of the hub checkpoints (T5 in transformers 5 always ties the output layer to the
# input embedding, so flan-t5-base instantiates with 222.9M parameters instead of the checkpoint's 247.6M)
PUBLISHED = {"gpt2": 124_439_808, "distilgpt2": 81_912_576, "t5-small": 60_506_624,
             "google/flan-t5-base": 222_903_552, "Qwen/Qwen2.5-0.5B": 494_032_768,
             "HuggingFaceTB/SmolLM2-135M": 134_515_008}


def test_catalog_lists_the_well_known_models_and_every_starter():
    df = al.models.catalog()
    print("\n" + df.to_string())
    assert {"name", "kind", "params", "load_fp32_mb", "load_bf16_mb", "load_int8_mb", "full_ft_fp32_mb",
            "full_ft_bf16_mb", "lora_bf16_mb", "fits", "finetune_fits"} <= set(df.columns)
    rows = df.set_index("name")
    for name, params in PUBLISHED.items():
        assert rows.loc[name, "params"] == params, name
    for name in al.models.starter_names():
        assert name in rows.index
    kinds = rows["kind"].to_dict()
    assert kinds["gpt2"] == "causal" and kinds["t5-small"] == "seq2seq" and kinds["starter:lstm-tiny"] == "rnn"
    # fp32 > bf16 > int8 to load; full fine-tuning > LoRA > loading
    assert (rows["load_fp32_mb"] > rows["load_bf16_mb"]).all() and (rows["load_bf16_mb"] > rows["load_int8_mb"]).all()
    tf = rows[rows["kind"] != "rnn"]
    assert (tf["full_ft_bf16_mb"] > tf["lora_bf16_mb"]).all() and (tf["lora_bf16_mb"] > tf["load_bf16_mb"]).all()
    assert df.attrs["free_mb"] > 0 and df["fits"].dtype == bool
    assert "<table" in df._repr_html_()


def test_catalog_fits_follows_the_free_memory(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "available_memory", lambda device=None: 400 * memory.MB)
    df = al.models.catalog(["starter:gpt-tiny"], include_defaults=False).set_index("name")
    assert list(df.index) == ["starter:gpt-tiny"] and bool(df.loc["starter:gpt-tiny", "fits"])
    df = al.models.catalog(["gpt2", "Qwen/Qwen2.5-0.5B"], include_defaults=False).set_index("name")
    assert bool(df.loc["gpt2", "fits"]) is False and df.loc["gpt2", "finetune_fits"] == "no"


def test_estimate_from_a_name_a_folder_and_a_config(tmp_path):
    from transformers import GPT2Config

    est = al.models.estimate_memory("gpt2", dtype="bfloat16")
    assert est.params == PUBLISHED["gpt2"] and est.dtype == "bfloat16" and est.kind == "causal"
    assert est.load_bytes == est.params * 2 + memory.RUNTIME_OVERHEAD_BYTES
    assert "gpt2" in str(est) and "MB" in str(est)
    config = GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=500, bos_token_id=0, eos_token_id=0)
    (tmp_path / "config.json").write_text(config.to_json_string())
    by_folder = al.models.estimate_memory(str(tmp_path))
    by_config = al.models.estimate_memory(config)
    from transformers import GPT2LMHeadModel

    assert by_folder.params == by_config.params == sum(p.numel() for p in GPT2LMHeadModel(config).parameters())
    assert al.models.estimate_memory("flan-t5-base").params == PUBLISHED["google/flan-t5-base"]  # an alias


def test_too_large_is_raised_before_any_allocation(monkeypatch, tmp_path, llama_tiny):
    folder = llama_tiny.save(tmp_path / "m")
    free = 20 * memory.MB
    monkeypatch.setattr(memory, "available_memory", lambda device=None: free)

    def boom(*args, **kwargs):
        raise AssertionError("weights were allocated before the memory check")

    from transformers import AutoModelForCausalLM

    from aigc_lab.models import starter

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", boom)
    monkeypatch.setattr(starter, "train_tokenizer", boom)
    for name in (str(folder), "starter:gpt-base"):
        with pytest.raises(ModelTooLargeError) as info:
            al.models.load(name)
        message = str(info.value)
        est = al.models.estimate_memory(name if name.startswith("starter:") else str(folder), dtype="float32")
        assert f"{est.load_mb:,.0f} MB" in message and "20 MB is free" in message, message
        assert "smaller model" in message and "bfloat16" in message
        assert isinstance(info.value, MemoryError)


@pytest.mark.parametrize("device", ["cpu", None])
def test_available_memory_is_positive_and_bounded(device):
    import psutil

    free = al.models.available_memory(device)
    assert 0 < free <= psutil.virtual_memory().total


_MEASURE = textwrap.dedent("""
    import gc, json, sys, psutil, torch
    import aigc_lab as al
    from aigc_lab.models import memory
    folder = sys.argv[1]
    proc = psutil.Process()
    gc.collect()
    before = proc.memory_info().rss
    handle = al.models.load(folder)
    lazy = proc.memory_info().rss
    with torch.no_grad():  # read every weight once, as the first forward pass does (safetensors are mmapped)
        total = sum(float(p.float().sum()) for p in handle.model.parameters())
    after = proc.memory_info().rss
    est = memory.estimate_memory(folder).load_bytes  # afterwards, so its imports are not in "before"
    print(json.dumps({"estimate": est, "lazy": lazy - before, "measured": after - before,
                      "params": handle.params}))
""")


def _save_random(kind_config, folder, tok):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if kind_config.is_encoder_decoder else AutoModelForCausalLM
    torch.manual_seed(0)
    auto.from_config(kind_config).save_pretrained(folder)
    tok.save_pretrained(folder)


def test_estimate_matches_the_measured_rss_of_loading_real_shapes(tmp_path):
    """gpt2 (124M) and t5-small (60M) with random weights, loaded in fresh processes: estimate within 25%."""
    from aigc_lab.models.known import known_config
    from aigc_lab.models.starter import train_tokenizer

    tok = train_tokenizer(["a small corpus for a tokenizer"] * 4, 300)
    procs = {}
    for name in ("gpt2", "t5-small"):
        folder = tmp_path / name
        _save_random(known_config(name), folder, tok)
        procs[name] = subprocess.Popen([sys.executable, "-c", _MEASURE, str(folder)], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        r = json.loads(out.strip().splitlines()[-1])
        ratio = r["measured"] / r["estimate"]
        print(f"\n{name}: params {r['params']:,}  estimate {r['estimate'] / 2**20:.0f} MB  measured RSS increase "
              f"{r['measured'] / 2**20:.0f} MB (right after load, weights still mmapped: {r['lazy'] / 2**20:.0f} MB)"
              f"  measured/estimate {ratio:.2f}")
        assert 0.75 <= ratio <= 1.25, (name, r)
