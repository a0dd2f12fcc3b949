"""Optimise tab: a quantized copy (int8 dynamic, bf16, fp16; torchao weight-only on CUDA) of a model."""

from __future__ import annotations

import ipywidgets as w
from traitlets import link

from .common import Panel, UserInputError, row
from .model_tab import handle_html

SCHEMES = ("int8", "bf16", "fp16", "int8-weight", "int4-weight", "float8")  # al.quantize's (models/quantize.py)
SOURCES = ("model", "finetuned")


class OptimiseTab(Panel):
    title = "Optimise"

    def controls(self) -> list[w.Widget]:
        s = self.studio
        self.scheme_w = w.Dropdown(options=SCHEMES, description="scheme", layout=w.Layout(width="220px"),
                                   tooltip="int8: dynamic int8 (CPU); bf16/fp16: casts; int8-weight: torchao; "
                                           "int4-weight, float8: torchao on CUDA")
        self.source_w = w.Dropdown(options=SOURCES, description="of", layout=w.Layout(width="220px"))
        self.quantize_button = w.Button(description="Quantize", icon="compress", button_style="primary")
        self.quantize_button.on_click(lambda _: self.quantize())
        self.result = w.HTML("<i>no quantized model yet</i>")
        link((s, "quant_scheme"), (self.scheme_w, "value"))
        link((s, "quant_source"), (self.source_w, "value"))
        return [row(self.scheme_w, self.source_w), self.quantize_button, self.result]

    def action_buttons(self) -> list[w.Button]:
        return [self.quantize_button]

    def _validate(self):
        s = self.studio
        if s.quant_scheme not in SCHEMES:
            raise UserInputError(f"scheme must be one of {', '.join(SCHEMES)}")
        if s.quant_source not in SOURCES:
            raise UserInputError(f"quantize the {' or the '.join(SOURCES)} model")
        return self.model_from(s.quant_source), s.quant_scheme

    def quantize(self) -> bool:
        """Quantize in the background; sets ``studio.quantized`` (the original handle is untouched)."""
        s = self.studio
        ok, args = self.checked(self._validate)
        if not ok:
            return False
        handle, scheme = args

        def work() -> str:
            from ...models.quantize import quantize

            q = quantize(handle, scheme)
            s.quantized = q
            before, after = _size_mb(handle), _size_mb(q)
            size = f" · weights {before:.1f} MB → {after:.1f} MB" if before and after else ""
            self.result.value = handle_html(q) + size
            return f"quantized {handle.name} to {scheme}"

        return self.start(f"Quantizing to {scheme}", work)


def _size_mb(handle) -> float | None:
    """Bytes held by the model's state dict (packed int8 weights included), in MB; None if unknown."""
    try:
        total = 0
        for value in handle.model.state_dict().values():
            if hasattr(value, "element_size"):
                total += value.numel() * value.element_size()
            elif isinstance(value, tuple):  # packed dynamic-quantized Linear params: (weight, bias)
                total += sum(v.numel() * v.element_size() for v in value if hasattr(v, "element_size"))
        return total / 2**20
    except Exception:  # noqa: BLE001 - a nicety only
        return None
