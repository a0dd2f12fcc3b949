"""SFT on conversations: labels exactly on assistant tokens + end-of-turn, packing, loss share, full/LoRA/distill."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import CHAT_CORPUS as CORPUS
from transformers import GPT2Config, GPT2LMHeadModel

import aigc_lab as al
from aigc_lab.bus import EventBus, Recorder
from aigc_lab.data import chat_templates as ct
from aigc_lab.errors import ChatTemplateError
from aigc_lab.models import ModelHandle
from aigc_lab.train import TrainConfigError, finetune
from aigc_lab.train.chat_data import encode_conversations, labelled, loss_share
from aigc_lab.train.collate import IGNORE
from aigc_lab.train.evaluate import chat_exact_match

CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"},
        {"role": "assistant", "content": "how are you today?"}, {"role": "user", "content": "fine thanks, and you?"},
        {"role": "assistant", "content": "the answer is four"}, {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "fine"}]
FAST = dict(progress=False, batch_size=4, max_length=96, save_final=False, background=False)


def tok_for(base, name):
    tok = copy.deepcopy(base)
    ct.add_markers(tok, name)
    return tok


def tiny(tok, seed=0, width=32):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=width, n_layer=1, n_head=2, n_positions=256,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    return ModelHandle(GPT2LMHeadModel(cfg).eval(), tok, "gpt-chat", "causal")


@pytest.mark.parametrize("name", ["chatml", "llama-3", "alpaca", "plain"])
def test_labels_are_exactly_the_assistant_tokens_and_their_end_of_turn(base_tok, name):
    tok = tok_for(base_tok, name)
    jinja = ct.resolve(tok, name)
    eot = ct.end_of_turn(tok, jinja)
    ids, labels = labelled(tok, CONV, jinja, "assistant")
    assert ids == tok(ct.render(tok, CONV, chat_template=jinja), add_special_tokens=False)["input_ids"]
    space = " " if name == "plain" else ""  # plain: the space after "Assistant:" starts the reply's first token
    expected = []
    for turn in CONV:
        if turn["role"] == "assistant":
            expected += tok(space + turn["content"], add_special_tokens=False)["input_ids"] + [eot]
    assert [x for x in labels if x != IGNORE] == expected
    assert all(x in (IGNORE, i) for i, x in zip(ids, labels, strict=True))  # a label is its own token, in place
    runs = "".join("x" if x != IGNORE else "." for x in labels).split(".")
    assert len([r for r in runs if r]) == 3  # three replies, three separate runs of labels
    assert [i for i, x in zip(ids, labels, strict=True) if x != IGNORE].count(eot) == 3
    assert labelled(tok, CONV, jinja, "all") == (ids, ids)


def test_packing_never_cuts_a_conversation(base_tok):
    tok = tok_for(base_tok, "chatml")
    jinja = tok.chat_template
    convs = [CONV[:3], CONV[1:3], CONV, CONV[:5], CONV[1:3]]
    alone = [labelled(tok, c, jinja, "assistant") for c in convs]
    lengths = [len(i) for i, _ in alone]
    width = max(lengths) + 5
    enc = encode_conversations(convs, tok, chat_template=jinja, train_on="assistant", max_length=width, packing=True)
    assert enc.packed and len(enc) < len(convs) and all(len(r) <= width for r in enc.input_ids)
    assert sum(enc.input_ids, []) == sum((i for i, _ in alone), [])
    assert sum(enc.labels, []) == sum((x for _, x in alone), [])
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    cuts, pos = set(), 0
    for n in lengths:
        cuts.add(pos)
        pos += n
    starts, pos = [], 0
    for row in enc.input_ids:
        starts.append(pos)
        assert row[0] == im_start
        pos += len(row)
    assert set(starts) <= cuts  # every row starts where a conversation starts
    flat = encode_conversations(convs, tok, chat_template=jinja, train_on="assistant", max_length=width, packing=False)
    assert len(flat) == len(convs) and loss_share(flat) == pytest.approx(loss_share(enc))


def recorded():
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    return bus, rec


def test_a_run_reports_its_loss_share_and_template_and_saves_it(base_tok, tmp_path):
    tok = copy.deepcopy(base_tok)  # no chat template of its own
    handle = tiny(tok)
    with pytest.raises(ChatTemplateError, match="no chat template"):
        finetune(handle, [CONV] * 4, max_steps=1, **FAST)
    with pytest.raises(ChatTemplateError, match="install"):
        finetune(handle, [CONV] * 4, chat_template="chatml", max_steps=1, **FAST)
    bus, rec = recorded()
    run = finetune(handle, [CONV] * 8, val=[CONV] * 2, chat_template="plain", max_steps=2, eval_generate=2,
                   max_target_length=4, event_bus=bus, output_dir=tmp_path / "run", **FAST)
    cfg = rec[run.run].start.config
    assert cfg["chat_template"] == ct.TEMPLATES["plain"].jinja and cfg["chat_template_name"] == "plain"
    assert cfg["train_on"] == "assistant" and 0 < cfg["loss_share"] < 0.5
    assert {"exact_match", "chrf", "bleu"} <= set(run.evals[-1])
    assert set(rec[run.run].evals[-1].metrics) == {"exact_match", "chrf", "bleu"}  # streamed to the panel too
    assert tok.chat_template is None  # the caller's tokenizer is untouched
    saved = al.models.load(run.model.save(tmp_path / "m"))
    assert saved.tokenizer.chat_template == ct.TEMPLATES["plain"].jinja
    everything = finetune(handle, [CONV] * 8, chat_template="plain", train_on="all", max_steps=1, event_bus=bus, **FAST)
    assert rec[everything.run].start.config["loss_share"] == 1.0


def test_a_run_where_no_token_carries_loss_is_refused(base_tok):
    handle = tiny(tok_for(base_tok, "chatml"))
    long_system = [{"role": "system", "content": " ".join(CORPUS[:8])}, *CONV[1:3]]
    with pytest.raises(TrainConfigError, match="no token carries loss.*max_length=16"):
        finetune(handle, [long_system] * 4, max_steps=1, **{**FAST, "max_length": 16, "background": True})
    with pytest.raises(TrainConfigError, match="train_on must be one of assistant, all"):
        finetune(handle, [CONV] * 4, train_on="users", max_steps=1, **FAST)


@pytest.mark.parametrize("method", ["full", "lora", "distill"])
def test_every_method_trains_on_conversations(base_tok, method, tmp_path):
    tok = tok_for(base_tok, "chatml")
    handle = tiny(tok)
    teacher = tiny(tok, seed=1, width=48) if method == "distill" else None
    run = finetune(handle, [CONV, CONV[:3], CONV[:5]] * 4, method=method, teacher=teacher, max_steps=6, lr=1e-2,
                   output_dir=tmp_path, **FAST)
    losses = run.history.loss.tolist()
    assert run.status == "ok" and len(losses) == 6 and losses[-1] < losses[0]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end in run.model.model.generation_config.eos_token_id


def test_lora_on_conversations_trains_the_marker_embeddings_and_nothing_else_outside_the_adapters(base_tok):
    tok = tok_for(base_tok, "chatml")
    handle = tiny(tok)
    original = {k: v.clone() for k, v in handle.model.state_dict().items()}
    markers = ct.marker_ids(tok, ct.resolve(tok, "chatml"))
    assert {tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")} <= set(markers)
    bus, rec = recorded()
    run = finetune(handle, [CONV] * 8, method="lora", max_steps=4, lr=5e-2, event_bus=bus, **FAST)
    assert rec[run.run].start.config["lora_trainable_tokens"] == list(markers)
    trainable = [n for n, p in run._loop.model.named_parameters() if p.requires_grad]
    assert any("trainable_tokens" in n for n in trainable) and all("lora_" in n or "trainable_tokens" in n
                                                                    for n in trainable), trainable
    merged = run.model.model.transformer.wte.weight.detach()
    before = original["transformer.wte.weight"]
    changed = sorted(int(i) for i in (merged - before).abs().sum(1).nonzero())
    assert changed == list(markers)  # the marker rows moved, every other row is the base model's
    assert torch.equal(run.model.model.lm_head.weight, run.model.model.transformer.wte.weight)  # still tied
    assert all(torch.equal(v, original[k]) for k, v in handle.model.state_dict().items())  # caller untouched
    off = finetune(handle, [CONV] * 8, method="lora", lora_marker_tokens=False, max_steps=2, **FAST)
    assert torch.equal(off.model.model.transformer.wte.weight, before)


def test_exact_match_on_the_chat_task_before_and_after_sft():
    """The notebook's recipe, smaller: a base pre-trained on the catalogue's plain text, then SFT on chats."""
    rows = al.data.samples.catalogue_chats(400, seed=0, items=6, max_questions=2)
    splits = al.data.load(rows).clean(dedupe=True).split(val=0.1, test=0.0, seed=0)
    sheet = al.data.samples.catalogue_sheet(6, seed=0)
    corpus = [t["content"] for c in splits.train.conversations() for t in c]
    model = al.models.build_starter("starter:gpt-tiny", corpus + sheet, n_layer=2, n_embd=64)
    tok = model.tokenizer
    base = finetune(model, sheet * 4, max_steps=300,
                    lr=1e-2, warmup_steps=5, **{**FAST, "batch_size": 8, "max_length": 64}).model
    val = splits.val.conversations()
    before = chat_exact_match(base.model, tok, val, chat_template=tok.chat_template, max_new_tokens=6)
    run = finetune(base, splits, method="full", max_steps=150, lr=3e-3, warmup_steps=5, eval_every=150,
                   eval_generate=len(val), max_target_length=6, **{**FAST, "batch_size": 16})
    after = run.evals[-1]["exact_match"]
    assert before == 0.0 and after >= 0.8, (before, after)
    replies = [al.infer.reply(s) for s in al.chat(run.model, splits.val.prompts(len(val)), max_new_tokens=6)]
    assert al.data.samples.chat_accuracy(replies, val) == pytest.approx(after)  # al.chat agrees with the eval
