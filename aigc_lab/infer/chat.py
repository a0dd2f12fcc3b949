"""``chat`` and ``Conversation``: the assistant's reply to a conversation, streamed by the same engine.

The conversation is rendered with the model's chat template (or a named one) with the generation prompt
added, and the run stops on the template's end-of-turn token as well as on every id of the model's
``generation_config.eos_token_id``. ``reply(stream)`` is the reply's text without those markers.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from ..data.chat_templates import end_of_turn, name_of, render, resolve
from ..data.conversations import normalize_turns
from ..errors import ChatTemplateError, ConversationError

Messages = Sequence[Mapping[str, Any]]


def _prompt_turns(messages: Messages) -> list[dict[str, str]]:
    """Validate turns as the data loader does, except that the last one is the user's (no reply yet)."""
    if isinstance(messages, str) or not isinstance(messages, Sequence) or not messages:
        raise ConversationError('messages must be a non-empty list of turns like {"role": "user", "content": "Hi"}')
    try:
        return normalize_turns([*messages, {"role": "assistant", "content": "-"}])[:-1]
    except ConversationError as exc:
        if "two assistant turns" in str(exc):
            raise ConversationError("the conversation already ends with an assistant turn: add the user's next "
                                    "message before asking for a reply") from None
        raise


def chat_prompt(tokenizer: Any, messages: Messages, chat_template: str | None = None) -> str:
    """The text the engine continues: the rendered conversation plus the opening of the assistant's turn.

    A template that writes the start token itself (Llama-3's ``{{ bos_token }}``) would get a second one from
    a tokenizer that adds it, so it is left to the tokenizer then (``apply_chat_template`` tokenizes the same way).
    """
    text = render(tokenizer, _prompt_turns(messages), chat_template=chat_template, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos):
        ids = tokenizer("x")["input_ids"]
        if ids and ids[0] == tokenizer.bos_token_id and len(ids) > len(tokenizer("x", add_special_tokens=False)
                                                                        ["input_ids"]):
            text = text[len(bos):]
    return text


def chat(model: Any, messages: Messages | Sequence[Messages], *, chat_template: str | None = None,
         background: bool = False, event_bus: Any = None, **params: Any) -> Any:
    """Stream the assistant's reply to ``messages`` (OpenAI-style turns) from ``model``: a ``TokenStream``.

    ``chat_template``: a named template (chatml, llama-3, alpaca, plain) or Jinja source for a model without
    its own. A list of conversations decodes as one batch and gives one stream per conversation. Other
    parameters are ``al.generate``'s (``max_new_tokens``, ``temperature``, ``stop``...). ``reply(stream)``
    gives the reply without end-of-turn markers.
    """
    from ..models import ModelHandle, load
    from .engine import start_generation

    handle = model if isinstance(model, ModelHandle) else load(model)
    if handle.kind == "seq2seq":
        raise ChatTemplateError(f"{handle.name!r} is a seq2seq model; chat needs a causal (decoder-only) model")
    batch = bool(messages) and not isinstance(messages, str) and isinstance(messages[0], Sequence) \
        and not isinstance(messages[0], (str, Mapping))
    convs = list(messages) if batch else [messages]
    tok = handle.tokenizer
    jinja = resolve(tok, chat_template)
    prompts = [chat_prompt(tok, c, jinja) for c in convs]
    template = name_of(jinja)
    chats = [{"messages": _prompt_turns(c), "template": template} for c in convs]
    extra = params.pop("stop_token_ids", ())
    extra = (extra,) if isinstance(extra, int) else tuple(extra)
    stops = (*extra, end_of_turn(tok, jinja))
    return start_generation(handle, prompts if batch else prompts[0], background=background, event_bus=event_bus,
                            chats=chats, stop_token_ids=stops, **params)


def reply(stream: Any) -> str:
    """The text of a chat stream's reply without special tokens (end-of-turn, end of text), stripped."""
    stream.wait()
    return stream.handle.tokenizer.decode(stream.ids, skip_special_tokens=True).strip()


class Conversation:
    """A multi-turn chat: ``say(text)`` streams the reply, which joins ``messages`` once it has ended.

        c = al.Conversation(model, system="Answer briefly.")
        for token in c.say("What is the price of the red lamp?"):
            print(token.text, end="")
        c.messages  # system, user, assistant
    """

    def __init__(self, model: Any, system: str | None = None, *, chat_template: str | None = None,
                 **params: Any) -> None:
        from ..models import ModelHandle, load

        self.model = model if isinstance(model, ModelHandle) else load(model)
        self.chat_template = chat_template
        self.params = params
        self.system = system
        self._turns: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        self._pending: Any = None

    def _settle(self) -> None:
        """Add the last reply (once its stream has ended); an empty or failed reply drops its user turn."""
        stream, self._pending = self._pending, None
        if stream is None:
            return
        try:
            text = reply(stream)
        except Exception:  # noqa: BLE001 - the stream's consumer saw the error; the history stays consistent
            text = ""
        if text:
            self._turns.append({"role": "assistant", "content": text})
        else:
            self._turns.pop()

    @property
    def messages(self) -> list[dict[str, str]]:
        """The turns so far (waits for a reply still streaming)."""
        self._settle()
        return [dict(t) for t in self._turns]

    def say(self, text: str, **params: Any) -> Any:
        """Add the user's ``text`` and stream the assistant's reply (a ``TokenStream``)."""
        self._settle()
        self._turns.append({"role": "user", "content": text})
        try:
            self._pending = chat(self.model, self._turns, chat_template=self.chat_template,
                                 **{**self.params, **params})
        except BaseException:
            self._turns.pop()
            raise
        return self._pending

    def reset(self) -> None:
        """Forget every turn but the system message."""
        self._pending = None
        self._turns = [{"role": "system", "content": self.system}] if self.system else []

    def __len__(self) -> int:
        return len(self.messages)

    def __repr__(self) -> str:
        return f"Conversation({self.model.name!r}, {len(self._turns)} turns)"

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td><b>{html.escape(t['role'])}</b></td><td style='white-space:pre-wrap'>"
                       f"{html.escape(t['content'])}</td></tr>" for t in self.messages)
        return f"<table>{rows}</table>"
