"""Chat templates: conversations as model text, through transformers' ``apply_chat_template`` everywhere.

A model's own ``tokenizer.chat_template`` is used when it has one. Otherwise a named template: ``chatml``
(``<|im_start|>role ... <|im_end|>``, Qwen's), ``llama-3`` (``<|start_header_id|>`` ... ``<|eot_id|>``),
``alpaca`` (``### Instruction:`` / ``### Response:``) or ``plain`` (``User:`` / ``Assistant:``); the last two
end a turn with the tokenizer's end token, so they need no new tokens. Every template is a Jinja string,
so the one used in training is stored as the tokenizer's ``chat_template`` and saved with the model.

The *end-of-turn* token (``<|im_end|>``, ``<|eot_id|>``, or the end token) is found by rendering a
conversation and reading the first special token after the assistant's text; generation stops on it,
and training labels include it, so a fine-tuned model learns where its turn ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ChatTemplateError


@dataclass(frozen=True)
class NamedTemplate:
    """A template a model without one can use: its Jinja source and the markers that must be single tokens."""

    name: str
    jinja: str
    markers: tuple[str, ...] = ()


_CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
           "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
_LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
           " + m['content'] | trim }}{{ '<|eot_id|>' }}{% endfor %}"
           "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
_ALPACA = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + '\\n\\n' }}"
           "{% elif m['role'] == 'user' %}{{ '### Instruction:\\n' + m['content'] + '\\n\\n' }}"
           "{% elif m['role'] == 'assistant' %}{{ '### Response:\\n' + m['content'] + eos_token + '\\n\\n' }}"
           "{% else %}{{ '### ' + m['role'] | capitalize + ':\\n' + m['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
           "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}")
# the space before a reply belongs to the reply ("Assistant:" + " Hello"): a byte-level BPE token starts with it,
# so the prompt must end before it for generation to see the tokens training saw
_PLAIN = ("{% for m in messages %}{{ m['role'] | capitalize + ': ' + m['content'] }}"
          "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")

TEMPLATES: dict[str, NamedTemplate] = {
    "chatml": NamedTemplate("chatml", _CHATML, ("<|im_start|>", "<|im_end|>")),
    "llama-3": NamedTemplate("llama-3", _LLAMA3, ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    "alpaca": NamedTemplate("alpaca", _ALPACA),
    "plain": NamedTemplate("plain", _PLAIN),
}
"""Named templates for models that have none (``chat_template=`` in ``finetune``, ``al.chat``, ``install``)."""


def resolve(tokenizer: Any, chat_template: str | None = None) -> str:
    """The Jinja source to use: a named template, a Jinja string as given, else the tokenizer's own.

    Raises ``ChatTemplateError`` when nothing applies, naming the templates that can be picked.
    """
    if chat_template is not None:
        if chat_template in TEMPLATES:
            return TEMPLATES[chat_template].jinja
        if "{{" in chat_template or "{%" in chat_template:
            return chat_template
        raise ChatTemplateError(f"unknown chat template {chat_template!r}; pick one of {', '.join(TEMPLATES)} "
                                "or give a Jinja template string")
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # several named templates: the default one
        own = own.get("default")
    if not own:
        raise ChatTemplateError("this model's tokenizer has no chat template: pass chat_template= one of "
                                f"{', '.join(TEMPLATES)} (chatml and llama-3 need their marker tokens: "
                                "al.data.chat_templates.install(model, 'chatml') adds them)")
    return own


def name_of(jinja: str) -> str:
    """The name of a named template's source, else ``"custom"``."""
    return next((t.name for t in TEMPLATES.values() if t.jinja == jinja), "custom")


def check_markers(tokenizer: Any, jinja: str) -> None:
    """A named template's markers must each be one token of ``tokenizer``, or turns could not be found or stopped."""
    named = TEMPLATES.get(name_of(jinja))
    missing = [m for m in (named.markers if named else ()) if m not in tokenizer.get_vocab()]
    if missing:
        raise ChatTemplateError(f"the {named.name} template needs the tokens {', '.join(missing)}, which this "
                                f"tokenizer lacks: run al.data.chat_templates.install(model, {named.name!r}) first "
                                "(adds them and resizes the embeddings), or use chat_template='alpaca' or 'plain'")


def render(tokenizer: Any, messages: Sequence[Mapping[str, str]], *, chat_template: str | None = None,
           add_generation_prompt: bool = False) -> str:
    """The conversation as model text (the template from ``resolve``), optionally opening the assistant's turn."""
    jinja = resolve(tokenizer, chat_template)
    try:
        return tokenizer.apply_chat_template([dict(m) for m in messages], chat_template=jinja, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # noqa: BLE001 - jinja raises many kinds (TemplateError, TypeError...)
        raise ChatTemplateError(f"the chat template failed on this conversation ({type(exc).__name__}: {exc}); "
                                "check the roles it allows, or pick another chat_template=") from None


def end_of_turn(tokenizer: Any, chat_template: str | None = None) -> int:
    """The id that ends an assistant turn: the first special token the template puts after the reply."""
    probe = "ReplyProbe7"
    text = render(tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}],
                  chat_template=chat_template)
    after = text[text.index(probe) + len(probe):]
    specials = set(tokenizer.all_special_ids) | {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
    for tid in tokenizer(after, add_special_tokens=False)["input_ids"]:
        if tid in specials:
            return int(tid)
    if tokenizer.eos_token_id is None:
        raise ChatTemplateError("the chat template puts no special token after the assistant's reply and the "
                                "tokenizer has no end token: use a template that ends turns with one")
    return int(tokenizer.eos_token_id)


def marker_ids(tokenizer: Any, chat_template: str | None = None) -> tuple[int, ...]:
    """The special tokens the template writes around turns (``<|im_start|>``, ``<|im_end|>``, ...), sorted: a
    model that has never seen them needs their embeddings trained, which LoRA alone does not do."""
    text = render(tokenizer, [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                              {"role": "assistant", "content": "a"}], chat_template=chat_template)
    specials = set(tokenizer.all_special_ids) | {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
    found = {t for t in tokenizer(text, add_special_tokens=False)["input_ids"] if t in specials}
    return tuple(sorted(found | {end_of_turn(tokenizer, chat_template)}))


def assistant_spans(tokenizer: Any, messages: Sequence[Mapping[str, str]], chat_template: str | None = None,
                    ) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and, per assistant turn, the character span of its reply and end-of-turn token.

    A reply starts where the conversation before it, rendered with the generation prompt, ends (so the
    template must render each prefix as a prefix of the whole: ChatML, Llama-3, Alpaca and plain do) and
    ends after the first end-of-turn token that follows.
    """
    jinja = resolve(tokenizer, chat_template)
    full = render(tokenizer, messages, chat_template=jinja)
    eot = tokenizer.convert_ids_to_tokens(end_of_turn(tokenizer, jinja))
    spans = []
    for i, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], chat_template=jinja, add_generation_prompt=True)
        if not full.startswith(before):
            raise ChatTemplateError("this chat template renders a conversation's beginning differently from the "
                                    "whole conversation, so the assistant's tokens cannot be found: train with "
                                    "train_on='all', or pick chat_template='chatml' (or llama-3, alpaca, plain)")
        end = full.find(eot, len(before))
        if end < 0:
            raise ChatTemplateError(f"no end-of-turn token {eot!r} after assistant turn {i}: the template and the "
                                    "tokenizer disagree; pick another chat_template=")
        spans.append((len(before), end + len(eot)))
    return full, spans


def install(model: Any, name: str = "chatml") -> Any:
    """Give ``model`` (a ``ModelHandle``) the named template: missing markers become special tokens (embeddings
    resized), the template becomes the tokenizer's ``chat_template``, and generation stops at the end of a turn."""
    if name not in TEMPLATES:
        raise ChatTemplateError(f"unknown chat template {name!r}; pick one of {', '.join(TEMPLATES)}")
    tok = model.tokenizer
    add_markers(tok, name)
    emb = model.model.get_input_embeddings() if hasattr(model.model, "get_input_embeddings") else None
    if emb is not None and emb.num_embeddings < len(tok):
        model.model.resize_token_embeddings(len(tok))
    stop_at_end_of_turn(model.model, tok)
    return model


def add_markers(tokenizer: Any, name: str) -> None:
    """Add the named template's markers as special tokens (those missing) and set it as ``chat_template``."""
    template = TEMPLATES[name]
    missing = [m for m in template.markers if m not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    tokenizer.chat_template = template.jinja


def stop_at_end_of_turn(model: Any, tokenizer: Any) -> None:
    """Put the template's end-of-turn id into ``generation_config.eos_token_id`` (a list, as Qwen and Llama-3 do)."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return
    ids = config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    eot = end_of_turn(tokenizer)
    if eot not in ids:
        ids.append(eot)
    config.eos_token_id = ids
