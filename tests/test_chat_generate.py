"""Generation stops where transformers' stops (a list of end ids), al.chat, Conversation and %%aigc chat."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import aigc_lab as al
from aigc_lab.bus import EventBus, Recorder
from aigc_lab.data import chat_templates as ct
from aigc_lab.errors import ChatTemplateError, ConversationError
from aigc_lab.models import ModelHandle, train_tokenizer

CORPUS = ["hello world, how are you today?", "fine thanks, and you?", "the answer is four"] * 20
PROMPT = "hello world"


@pytest.fixture(scope="module")
def tok():
    t = train_tokenizer(CORPUS, 300)
    ct.add_markers(t, "chatml")
    return t


def tiny(tok, seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=2, n_positions=128, tie_word_embeddings=False,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(cfg).eval()
    return ModelHandle(model, tok, "gpt-chat", "causal")


def hf_new_ids(handle, prompt_ids, n=16):
    ids = torch.tensor([prompt_ids])
    out = handle.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                pad_token_id=handle.tokenizer.eos_token_id)
    return out[0, len(prompt_ids):].tolist()


def first_new(ids, avoid):
    """An id that first occurs at position >= 2 of ``ids`` and is none of ``avoid``: stopping on it stops early."""
    for k, t in enumerate(ids):
        if k >= 2 and t not in ids[:k] and t not in avoid:
            return k, t
    raise AssertionError(f"no usable id in {ids}")


def test_a_list_of_eos_ids_stops_where_transformers_generate_stops(tok):
    handle = tiny(tok)
    prompt_ids = tok(PROMPT)["input_ids"]
    handle.model.generation_config.eos_token_id = None
    free = hf_new_ids(handle, prompt_ids)  # no end id at all: 16 tokens
    k, stop = first_new(free, {tok.eos_token_id})
    assert al.generate(handle, PROMPT, max_new_tokens=16, ignore_eos=True).wait().ids == free  # same greedy path

    handle.model.generation_config.eos_token_id = [tok.eos_token_id, stop]
    theirs = hf_new_ids(handle, prompt_ids)
    ours = al.generate(handle, PROMPT, max_new_tokens=16).wait()
    assert theirs == free[:k + 1] and theirs[-1] == stop  # transformers stops on the second id of the list
    assert ours.ids == theirs and ours.status == "ok"
    batch = al.generate(handle, [PROMPT, PROMPT], max_new_tokens=16)  # the batched loop stops the same way
    assert [s.wait().ids for s in batch] == [theirs, theirs]
    assert len(al.generate(handle, PROMPT, max_new_tokens=16, ignore_eos=True).wait().ids) == 16


def test_stop_token_ids_parameter_and_config_record(tok):
    handle = tiny(tok)
    free = al.generate(handle, PROMPT, max_new_tokens=16, ignore_eos=True).wait().ids
    k, stop = first_new(free, {tok.eos_token_id})
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    s = al.generate(handle, PROMPT, max_new_tokens=16, stop_token_ids=[stop], event_bus=bus).wait()
    assert s.ids == free[:k + 1]
    assert rec[s.run].start.config["stop_token_ids"] == [stop]
    with pytest.raises(al.errors.GenerationConfigError, match="stop_token_ids"):
        al.generate(handle, PROMPT, stop_token_ids=[-1])


def im_end_where_greedy_goes(handle, prompt_ids):
    """Make ``<|im_end|>`` win where the greedy path first meets a fresh token (its output row: that token's, x2)."""
    tok = handle.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    free = hf_new_ids(handle, prompt_ids)
    k, target = first_new(free, {tok.eos_token_id, im_end})
    with torch.no_grad():
        head = handle.model.lm_head.weight
        head[im_end] = 2.0 * head[target]
    return im_end


def test_chat_applies_the_template_and_stops_at_the_end_of_turn(tok):
    handle = tiny(tok)
    handle.model.generation_config.eos_token_id = tok.eos_token_id  # only the template says where a turn ends
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    text = ct.render(tok, messages, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    prompt_ids = tok(text)["input_ids"]
    im_end = im_end_where_greedy_goes(handle, prompt_ids)
    handle.model.generation_config.eos_token_id = [tok.eos_token_id, im_end]
    theirs = hf_new_ids(handle, prompt_ids)
    handle.model.generation_config.eos_token_id = tok.eos_token_id
    assert theirs[-1] == im_end and len(theirs) < 16
    stream = al.chat(handle, messages, max_new_tokens=16)
    assert stream.prompt == text and stream.wait().ids == theirs
    assert al.generate(handle, text, max_new_tokens=16).wait().ids != theirs  # plain generate runs past the turn
    reply = al.infer.reply(stream)
    assert "<|im_end|>" in stream.text and "<|im_end|>" not in reply and reply == tok.decode(theirs[:-1]).strip()
    a, b = al.chat(handle, [messages, messages[1:]], max_new_tokens=16)  # a batch of conversations
    assert a.wait().ids == theirs and b.prompt == ct.render(tok, messages[1:], add_generation_prompt=True)


def test_a_chat_run_records_its_turns_for_the_panel(tok):
    handle = tiny(tok)
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "human", "content": "hello"}]
    a, b = al.chat(handle, [messages, messages[1:]], max_new_tokens=3, event_bus=bus)
    a.wait(), b.wait()
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]  # roles normalized
    assert rec[a.run].start.config["chat"] == {"messages": turns, "template": "chatml"}
    assert rec[b.run].start.config["chat"]["messages"] == turns[1:]
    assert "chat" not in rec[al.generate(handle, "hi", max_new_tokens=2, event_bus=bus).wait().run].start.config


def test_conversation_keeps_the_history(tok):
    handle = tiny(tok)
    conv = al.Conversation(handle, system="Be brief.", max_new_tokens=4, ignore_eos=True)
    first = conv.say("hello")
    assert [t.text for t in first]  # streams
    second = conv.say("again")
    roles = [t["role"] for t in conv.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert conv.messages[2]["content"] == al.infer.reply(first)
    assert second.prompt.startswith(first.prompt) and "again" in second.prompt
    conv.reset()
    assert conv.messages == [{"role": "system", "content": "Be brief."}]
    with pytest.raises(ConversationError, match="unknown role"):
        al.chat(handle, [{"role": "narrator", "content": "x"}])
    with pytest.raises(ConversationError, match="already ends with an assistant turn"):
        al.chat(handle, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])


def test_a_model_without_a_template_needs_one_named(tok):
    plain_tok = copy.deepcopy(tok)
    plain_tok.chat_template = None
    handle = tiny(plain_tok)
    with pytest.raises(ChatTemplateError, match="no chat template"):
        al.chat(handle, [{"role": "user", "content": "hi"}])
    s = al.chat(handle, [{"role": "user", "content": "hi"}], chat_template="plain", max_new_tokens=3)
    assert s.prompt == "User: hi\nAssistant:" and s.wait().status == "ok"


def test_chat_cell_magic_streams_a_multi_turn_chat(tok, capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "aigc_lab")
        shell.user_ns["m"] = tiny(tok)
        shell.run_cell_magic("aigc", "chat --model m -n 3 --system 'Be brief.' -o s", "hello")
        shell.run_cell_magic("aigc", "chat --model m -n 3", "again")
        out = capsys.readouterr().out
        conv = shell.user_ns["s"]
        assert isinstance(conv, al.Conversation) and [t["role"] for t in conv.messages] == [
            "system", "user", "assistant", "user", "assistant"]
        assert "TTFT" in out
        shell.run_cell_magic("aigc", "chat --model m -n 3 --new -o s2", "fresh start")
        assert shell.user_ns["s2"].messages[0] == {"role": "user", "content": "fresh start"}
        assert len(conv.messages) == 5  # the earlier conversation is left as it was
    finally:
        InteractiveShell.clear_instance()
