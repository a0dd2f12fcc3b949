"""Chat templates: the tokenizer's own, named ones (chatml, llama-3, alpaca, plain), markers, end-of-turn, starters."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import CHAT_CORPUS as CORPUS
from transformers import GPT2Config, GPT2LMHeadModel

import aigc_lab as al
from aigc_lab.data import chat_templates as ct
from aigc_lab.errors import ChatTemplateError
from aigc_lab.models import ModelHandle

CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "world"}, {"role": "user", "content": "again"},
        {"role": "assistant", "content": "fine thanks"}]


def with_markers(tok, name):
    tok = copy.deepcopy(tok)
    ct.add_markers(tok, name)
    return tok


def test_named_templates_render_exactly(base_tok):
    chatml = with_markers(base_tok, "chatml")
    assert ct.render(chatml, CONV[:3]) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello<|im_end|>"
                                            "\n<|im_start|>assistant\nworld<|im_end|>\n")
    assert ct.render(chatml, CONV[:2], add_generation_prompt=True).endswith("<|im_start|>user\nhello<|im_end|>\n"
                                                                            "<|im_start|>assistant\n")
    llama = with_markers(base_tok, "llama-3")
    assert ct.render(llama, CONV[1:3]) == ("<|endoftext|><|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|>"
                                           "<|start_header_id|>assistant<|end_header_id|>\n\nworld<|eot_id|>")
    assert ct.render(base_tok, CONV[:3], chat_template="alpaca") == (
        "Be brief.\n\n### Instruction:\nhello\n\n### Response:\nworld<|endoftext|>\n\n")
    assert ct.render(base_tok, CONV[1:3], chat_template="plain") == "User: hello\nAssistant: world<|endoftext|>\n"
    assert ct.render(base_tok, CONV[1:2], chat_template="plain", add_generation_prompt=True) == (
        "User: hello\nAssistant:")


def test_the_tokenizers_own_template_wins_and_none_is_refused(base_tok):
    tok = copy.deepcopy(base_tok)
    with pytest.raises(ChatTemplateError, match="no chat template: pass chat_template= one of chatml, llama-3"):
        ct.render(tok, CONV)
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}"
    assert ct.render(tok, CONV[1:3]) == "[user] hello<|endoftext|>[assistant] world<|endoftext|>"
    assert ct.render(tok, CONV[1:3], chat_template="plain").startswith("User: hello")  # a name overrides it
    with pytest.raises(ChatTemplateError, match="unknown chat template 'chatm'"):
        ct.resolve(tok, "chatm")


def test_end_of_turn_is_the_first_special_token_after_the_reply(base_tok):
    chatml, llama = with_markers(base_tok, "chatml"), with_markers(base_tok, "llama-3")
    assert chatml.convert_ids_to_tokens(ct.end_of_turn(chatml)) == "<|im_end|>"
    assert llama.convert_ids_to_tokens(ct.end_of_turn(llama)) == "<|eot_id|>"
    assert ct.end_of_turn(base_tok, "alpaca") == ct.end_of_turn(base_tok, "plain") == base_tok.eos_token_id


def test_markers_must_be_tokens_and_install_adds_them(base_tok):
    tok = copy.deepcopy(base_tok)
    with pytest.raises(ChatTemplateError, match=r"needs the tokens <\|im_start\|>, <\|im_end\|>.*install"):
        ct.check_markers(tok, ct.resolve(tok, "chatml"))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64,
                                       eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id))
    handle = ct.install(ModelHandle(model, tok, "tiny", "causal"), "chatml")
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert {im_start, im_end} <= set(tok.all_special_ids) and len(tok) == len(base_tok) + 2
    assert handle.model.get_input_embeddings().num_embeddings == len(tok)
    assert handle.model.generation_config.eos_token_id == [tok.eos_token_id, im_end]
    assert tok.chat_template == ct.TEMPLATES["chatml"].jinja
    ct.check_markers(tok, tok.chat_template)  # no longer raises
    ids = tok("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == im_start and ids[-1] == im_end and ids.count(im_start) == ids.count(im_end) == 1


def test_starter_models_are_chatml_chat_models(tmp_path):
    handle = al.models.build_starter("starter:gpt-tiny", CORPUS)
    tok = handle.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.chat_template == ct.TEMPLATES["chatml"].jinja and im_end in tok.all_special_ids
    assert handle.model.generation_config.eos_token_id == [tok.eos_token_id, im_end]
    assert handle.model.get_input_embeddings().num_embeddings == len(tok)
    again = al.models.load(handle.save(tmp_path / "m"))  # the template and the stop list are saved with it
    assert again.tokenizer.chat_template == tok.chat_template
    assert again.model.generation_config.eos_token_id == [tok.eos_token_id, im_end]
