"""Compare tab: the same prompts through two or more of the Studio's models; speed and quality side by side."""

from __future__ import annotations

from typing import Any

import ipywidgets as w
from traitlets import link

from .common import MODEL_SLOTS, Panel, UserInputError, frame_html

DEFAULT_PROMPTS = ("The", "Once upon a time", "In Python, a list")


class CompareTab(Panel):
    title = "Compare"

    def controls(self) -> list[w.Widget]:
        s = self.studio
        self.models_w = w.SelectMultiple(options=MODEL_SLOTS, description="models", rows=3,
                                         tooltip="none selected = every model the Studio holds",
                                         layout=w.Layout(width="300px"))
        self.prompts_w = w.Textarea(description="prompts", placeholder="one per line (empty: 4 prompts from the data)",
                                    layout=w.Layout(width="640px", height="80px"))
        self.max_w = w.IntText(description="max new", layout=w.Layout(width="160px"))
        self.compare_button = w.Button(description="Compare", icon="balance-scale", button_style="primary")
        self.compare_button.on_click(lambda _: self.compare())
        self.table = w.HTML()
        link((s, "compare_models"), (self.models_w, "value"))
        link((s, "compare_prompts"), (self.prompts_w, "value"))
        link((s, "compare_max_new_tokens"), (self.max_w, "value"))
        return [self.models_w, self.prompts_w, self.max_w, self.compare_button, self.table]

    def action_buttons(self) -> list[w.Button]:
        return [self.compare_button]

    def _validate(self) -> tuple[list[Any], list[str], int]:
        s = self.studio
        if s.compare_max_new_tokens < 1:
            raise UserInputError("max new tokens must be at least 1")
        slots = list(s.compare_models) or [slot for slot in MODEL_SLOTS if getattr(s, slot) is not None]
        handles = [self.model_from(slot) for slot in slots]
        if len(handles) < 2:
            raise UserInputError("compare needs two models: load one, then fine-tune or quantize it "
                                 "(or select two in the list)")
        prompts = [line for line in s.compare_prompts.splitlines() if line.strip()]
        if not prompts:
            prompts = list(s.dataset.prompts(4)) if s.dataset is not None else list(DEFAULT_PROMPTS)
        return handles, prompts, s.compare_max_new_tokens

    def compare(self) -> bool:
        """Run ``al.compare`` in the background; sets ``studio.comparison`` (a DataFrame, one row per model)."""
        s = self.studio
        ok, args = self.checked(self._validate)
        if not ok:
            return False
        handles, prompts, max_new = args

        def work() -> str:
            from ...bench.compare import compare

            table = compare(handles, prompts=prompts, max_new_tokens=max_new)
            s.comparison = table
            self.table.value = frame_html(table)
            return f"compared {len(handles)} models on {len(prompts)} prompts"

        return self.start(f"Comparing {len(handles)} models", work)
