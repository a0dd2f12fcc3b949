"""Chat tab: a conversation with one of the Studio's models, each reply streamed inline as it is generated.

The conversation is an ``al.Conversation`` (``studio.conversation``): Send adds the message and streams the
reply with the chat template applied, stopping where the assistant's turn ends; New chat starts over. Changing
the model, the system message or the template starts a new conversation at the next Send.
"""

from __future__ import annotations

import time
from typing import Any

import ipywidgets as w
from traitlets import link

from .common import MODEL_SLOTS, Panel, UserInputError, esc, follow, row
from .generate_tab import metrics_text

TEMPLATES = ("auto", "chatml", "llama-3", "alpaca", "plain")  # auto: the model's own chat template
_BOX = ("font-family:var(--jp-ui-font-family,sans-serif);max-height:360px;overflow:auto;"
        "border:1px solid var(--jp-border-color2,#ddd);padding:6px;margin:4px 0")


def transcript_html(turns: list[dict[str, str]], pending: str | None = None) -> str:
    """The conversation as HTML rows (role, text), with the reply being streamed (``pending``) last."""
    rows = [(t["role"], t["content"]) for t in turns]
    if pending is not None:
        rows.append(("assistant", pending + "▍"))
    body = "".join(f"<div style='margin:2px 0'><b>{esc(role)}</b>: <span style='white-space:pre-wrap'>"
                   f"{esc(text)}</span></div>" for role, text in rows)
    return f"<div class='aigc-studio-chat' style='{_BOX}'>{body or '<i>no messages yet</i>'}</div>"


class ChatTab(Panel):
    title = "Chat"
    stoppable = True

    def controls(self) -> list[w.Widget]:
        s = self.studio
        self.model_w = w.Dropdown(options=MODEL_SLOTS, description="model", layout=w.Layout(width="220px"))
        self.template_w = w.Dropdown(options=TEMPLATES, description="template", layout=w.Layout(width="220px"))
        self.system_w = w.Text(description="System", placeholder="(none)",
                               layout=w.Layout(width="auto", max_width="640px"))
        self.message_w = w.Textarea(description="Message", placeholder="Hello!",
                                    layout=w.Layout(width="auto", max_width="640px", height="60px"))
        self.max_w = w.IntText(description="max new", layout=w.Layout(width="160px"))
        self.temp_w = w.FloatText(description="temp", step=0.1, layout=w.Layout(width="150px"))
        self.send_button = w.Button(description="Send", icon="paper-plane", button_style="primary")
        self.send_button.on_click(lambda _: self.send())
        self.new_button = w.Button(description="New chat", icon="refresh")
        self.new_button.on_click(lambda _: self.new_chat())
        self.transcript = w.HTML(transcript_html([]))
        self.metrics_w = w.HTML()
        for trait, widget in (("chat_model", self.model_w), ("chat_template", self.template_w),
                              ("chat_system", self.system_w), ("chat_message", self.message_w),
                              ("chat_max_new_tokens", self.max_w), ("chat_temperature", self.temp_w)):
            link((s, trait), (widget, "value"))
        return [row(self.model_w, self.template_w), self.system_w, self.transcript, self.message_w,
                row(self.max_w, self.temp_w, self.send_button, self.new_button), self.metrics_w]

    def action_buttons(self) -> list[w.Button]:
        return [self.send_button, self.new_button]

    def _conversation(self, handle: Any) -> Any:
        """The Studio's conversation if it is with this model, system message and template; else a new one."""
        from ...infer import Conversation

        s = self.studio
        template = None if s.chat_template == "auto" else s.chat_template
        system = s.chat_system.strip() or None
        c = s.conversation
        if c is not None and c.model is handle and c.system == system and c.chat_template == template:
            return c
        return Conversation(handle, system=system, chat_template=template)

    def _validate(self) -> tuple[Any, str, dict[str, Any]]:
        s = self.studio
        message = s.chat_message.strip()
        if not message:
            raise UserInputError("write a message first")
        if s.chat_max_new_tokens < 1:
            raise UserInputError("max new tokens must be at least 1")
        if s.chat_temperature < 0:
            raise UserInputError("temperature must be >= 0 (0 = greedy)")
        conversation = self._conversation(self.model_from(s.chat_model))
        return conversation, message, {"max_new_tokens": s.chat_max_new_tokens, "temperature": s.chat_temperature}

    def send(self) -> bool:
        """Send ``chat_message`` and stream the reply; at the end the reply is in ``conversation.messages``."""
        s = self.studio
        ok, args = self.checked(self._validate)
        if not ok:
            return False
        conversation, message, params = args
        self._cancel.clear()
        before = conversation.messages
        s.conversation = conversation
        self.metrics_w.value = ""
        t0 = time.perf_counter()

        def work() -> str:
            self.progress.max, self.progress.value = params["max_new_tokens"], 0
            turns = [*before, {"role": "user", "content": message}]
            stream = conversation.say(message, background=True, **params)  # the template is checked here
            s.chat_message = ""
            follow(self, stream, lambda so_far: self._render(turns, so_far))
            self._render(conversation.messages)  # the reply joins the history once it has ended
            self.metrics_w.value = f"<b>{esc(metrics_text(stream))}</b>"
            return f"{stream.status} · {conversation.model.name} · {time.perf_counter() - t0:.1f} s"

        self._render([*before, {"role": "user", "content": message}], "")
        return self.start(f"Replying with {conversation.model.name}", work, determinate=True)

    def new_chat(self) -> None:
        """Forget the conversation (the next Send starts a new one)."""
        if self.busy:
            self.error = self._busy_message()
            return
        self.studio.conversation = None
        self.error = ""
        self.metrics_w.value = ""
        self._render([])

    def stop(self) -> None:
        self._cancel.set()
        self.status = "stopping…"

    def _render(self, turns: list[dict[str, str]], pending: str | None = None) -> None:
        self.transcript.value = transcript_html(turns, pending)
