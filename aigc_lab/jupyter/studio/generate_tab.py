"""Generate tab: stream tokens inline (throttled to about one update per frame), Stop, TTFT and tokens/s at the end."""

from __future__ import annotations

import time
from typing import Any

import ipywidgets as w
from traitlets import link

from .common import MODEL_SLOTS, Panel, UserInputError, esc, fmt, follow, row

_TEXT_STYLE = ("white-space:pre-wrap;font-family:var(--jp-code-font-family,monospace);max-height:320px;"
               "overflow:auto;border:1px solid var(--jp-border-color2,#ddd);padding:6px;margin:4px 0")


def metrics_text(stream: Any) -> str:
    """``status · N tokens · TTFT x ms · y tok/s · ITL p50/p95`` for a finished stream."""
    if not stream.done:  # never block: a running stream has no metrics yet
        return f"{stream.status}, {len(stream.tokens)} tokens so far"
    try:
        m = stream.metrics
    except Exception:  # noqa: BLE001 - a failed stream re-raises its error; its status says enough here
        return f"{stream.status}"
    return (f"{stream.status} · {m.tokens} tokens · TTFT {fmt(m.ttft_ms, ' ms')} · {fmt(m.tok_s, ' tok/s')} · "
            f"ITL p50 {fmt(m.itl_p50_ms, ' ms')} / p95 {fmt(m.itl_p95_ms, ' ms')}")


class GenerateTab(Panel):
    title = "Generate"
    stoppable = True

    def controls(self) -> list[w.Widget]:
        s = self.studio
        self.model_w = w.Dropdown(options=MODEL_SLOTS, description="model", layout=w.Layout(width="220px"))
        self.prompt_w = w.Textarea(description="Prompt", placeholder="Once upon a time",
                                   layout=w.Layout(width="auto", max_width="640px", height="80px"))
        self.max_w = w.IntText(description="max new", layout=w.Layout(width="160px"))
        self.temp_w = w.FloatText(description="temp", step=0.1, layout=w.Layout(width="150px"))
        self.top_k_w = w.IntText(description="top k", layout=w.Layout(width="150px"))
        self.seed_w = w.IntText(description="seed", layout=w.Layout(width="150px"))
        self.eos_w = w.Checkbox(description="ignore EOS", indent=False, layout=w.Layout(width="110px"))
        self.generate_button = w.Button(description="Generate", icon="play", button_style="primary")
        self.generate_button.on_click(lambda _: self.generate())
        self.output = w.HTML(f"<div style='{_TEXT_STYLE}'></div>")
        self.metrics_w = w.HTML()
        for trait, widget in (("gen_model", self.model_w), ("prompt", self.prompt_w), ("max_new_tokens", self.max_w),
                              ("temperature", self.temp_w), ("top_k", self.top_k_w), ("seed", self.seed_w),
                              ("ignore_eos", self.eos_w)):
            link((s, trait), (widget, "value"))
        return [self.model_w, self.prompt_w, row(self.max_w, self.temp_w, self.top_k_w, self.seed_w, self.eos_w),
                self.generate_button, self.output, self.metrics_w]

    def action_buttons(self) -> list[w.Button]:
        return [self.generate_button]

    def _validate(self) -> tuple[Any, dict[str, Any]]:
        s = self.studio
        if not s.prompt.strip():
            raise UserInputError("write a prompt first")
        if s.max_new_tokens < 1:
            raise UserInputError("max new tokens must be at least 1")
        if s.temperature < 0:
            raise UserInputError("temperature must be >= 0 (0 = greedy)")
        if s.top_k < 0:
            raise UserInputError("top k must be >= 0 (0 = no top-k filter)")
        handle = self.model_from(s.gen_model)
        return handle, {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_k": s.top_k,
                        "seed": s.seed, "ignore_eos": s.ignore_eos}

    def generate(self) -> bool:
        """Stream a generation into the output area; sets ``studio.stream`` and, at the end, ``generated_text``."""
        s = self.studio
        ok, args = self.checked(self._validate)
        if not ok:
            return False
        handle, params = args
        prompt = s.prompt
        self._cancel.clear()
        s.stream = None  # the stream of this click replaces the last one as soon as it exists
        self.metrics_w.value = ""
        self._render(prompt, "")

        t0 = time.perf_counter()

        def work() -> str:
            from ...infer import generate

            self.progress.max, self.progress.value = params["max_new_tokens"], 0
            stream = generate(handle, prompt, background=True, **params)
            s.stream = stream
            try:
                follow(self, stream, lambda so_far: self._render(prompt, so_far))
            finally:
                s.generated_text = "".join(t.text for t in stream.tokens)
            self.progress.value = self.progress.max if stream.status == "ok" else self.progress.value
            self.metrics_w.value = f"<b>{esc(metrics_text(stream))}</b>"
            # The metrics line above is the result; the status line only says how it ended (not the same line twice).
            return f"{stream.status} · {handle.name} · {time.perf_counter() - t0:.1f} s"

        return self.start(f"Generating with {handle.name}", work, determinate=True)

    def stop(self) -> None:
        self._cancel.set()
        stream = self.studio.stream
        if stream is not None and not stream.done:
            stream.cancel()
            self.status = "stopping…"

    def _render(self, prompt: str, text: str) -> None:
        self.output.value = (f"<div style='{_TEXT_STYLE}'><span style='opacity:0.55'>{esc(prompt)}</span>"
                             f"{esc(text)}</div>")
