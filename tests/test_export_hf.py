"""Merged HF folder and adapter export, checked by reloading with ``transformers`` / ``peft`` as vLLM and TGI would."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

import aigc_lab as al
from aigc_lab.errors import ExportError
from aigc_lab.models import ModelHandle
from aigc_lab.models.handle import shared_copy
from aigc_lab.train.config import TrainConfig
from aigc_lab.train.lora import apply_lora

PROMPT = "The for statement"


def greedy(model, tok, n: int = 12) -> list[int]:
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)[
            0, ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def lora_handle(llama_tiny):
    """A handle over an in-memory (unmerged) LoRA model whose adapters change the output."""
    peft = apply_lora(shared_copy(llama_tiny.model), "causal", TrainConfig.from_kwargs("lora", {}))
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    peft.eval()
    return ModelHandle(model=peft, tokenizer=llama_tiny.tokenizer, name="llama-tiny+lora", kind="causal")


def test_merged_folder_reloads_and_decodes_like_the_in_memory_lora_model(lora_handle, llama_tiny, tmp_path):
    tok = lora_handle.tokenizer
    expected = greedy(lora_handle.model, tok)
    assert expected != greedy(llama_tiny.model, tok), "the adapters do not change the output: weak test"
    result = al.export(lora_handle, "hf", tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(result.path).eval()
    assert not any("lora" in n for n, _ in reloaded.named_parameters())
    assert greedy(reloaded, AutoTokenizer.from_pretrained(result.path)) == expected
    assert result.command == f"vllm serve {result.path} --dtype float32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temp folder left


def test_folder_carries_eos_list_chat_template_and_chosen_dtype(lora_handle, tmp_path):
    tok = lora_handle.tokenizer
    eos = lora_handle.model.generation_config.eos_token_id
    assert isinstance(eos, list) and len(eos) >= 2 and tok.chat_template
    for dtype in ("float16", "bfloat16"):
        result = al.export(lora_handle, "hf", tmp_path / dtype, dtype=dtype)
        assert GenerationConfig.from_pretrained(result.path).eos_token_id == eos, "eos list not exported"
        assert AutoTokenizer.from_pretrained(result.path).chat_template == tok.chat_template, "chat template lost"
        with safe_open(result.path / "model.safetensors", "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16" if dtype == "float16" else "BF16"}
        assert json.loads((result.path / "config.json").read_text())["dtype"] == dtype
        assert result.details["commands"]["tgi"].endswith(f"--dtype {dtype}")
    assert next(lora_handle.model.parameters()).dtype == torch.float32  # converted on a copy


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft probes it
def test_a_lora_run_exports_its_adapter_and_merged_folder_that_agree(gpt_tiny, tmp_path):
    from peft import PeftModel

    run = al.finetune(gpt_tiny, al.data.samples.python_docs()[:4], method="lora", max_steps=6, batch_size=4,
                      max_length=32, lr=2e-2, background=False, progress=False, save_final=False,
                      output_dir=tmp_path / "run")
    merged = al.export(run, "hf", tmp_path / "merged")  # reads run.model (merges) first...
    adapter = al.export(run, "adapter", tmp_path / "adapter")  # ...and the adapter can still be saved
    assert sorted(p.name for p in adapter.path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    tok = gpt_tiny.tokenizer
    via_adapter = PeftModel.from_pretrained(copy.deepcopy(gpt_tiny.model), adapter.path).eval()
    expected = greedy(run.model.model, tok)
    assert expected != greedy(gpt_tiny.model, tok), "the run did not change the model: weak test"
    assert greedy(AutoModelForCausalLM.from_pretrained(merged.path).eval(), tok) == expected
    assert greedy(via_adapter, tok) == expected


def test_hf_options_are_checked_before_writing(lora_handle, tmp_path):
    with pytest.raises(ExportError, match="dtype='int8'"):
        al.export(lora_handle, "hf", tmp_path / "x", dtype="int8")
    with pytest.raises(ExportError, match="takes no option quant"):
        al.export(lora_handle, "hf", tmp_path / "x", quant="q8_0")
    assert list(tmp_path.iterdir()) == []


def test_export_from_the_magic_and_the_studio(gpt_tiny, tmp_path, capsys):
    from IPython.core.interactiveshell import InteractiveShell

    from aigc_lab.jupyter.studio import Studio

    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "aigc_lab")
        shell.user_ns["m"] = gpt_tiny
        result = shell.run_cell(f"%aigc export hf {tmp_path / 'magic'} --model m --dtype float16 -o e")
        out = capsys.readouterr().out
        assert result.success and f"vllm serve {tmp_path / 'magic'} --dtype float16" in out
        assert shell.user_ns["e"].details["dtype"] == "float16"
        result = shell.run_cell(f"%aigc export gguf {tmp_path / 'x.bin'} --model m")
        assert not result.success and "ends in .gguf" in capsys.readouterr().err  # a usage error, no traceback
    finally:
        InteractiveShell.clear_instance()
    studio = Studio(model=gpt_tiny, export_source="model", export_target="hf", export_path=str(tmp_path / "studio"))
    assert studio.export() and studio.wait(120)
    assert studio.errors == {} and studio.exported.path == tmp_path / "studio"
    assert "vllm serve" in studio.summary_text() and "Export" in studio.summary_text()
    studio.export_path = ""
    assert not studio.export() and "give a path" in studio.errors["Export"]
