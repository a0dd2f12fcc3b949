"""Export tab: write the loaded or fine-tuned model as a GGUF (llama.cpp / Ollama) or a merged HF folder (vLLM)."""

from __future__ import annotations

import ipywidgets as w
from traitlets import link

from ...export.gguf import ALL_QUANTS
from ...export.hf import DTYPES
from .common import Panel, UserInputError, esc, row

TARGETS = ("gguf", "hf")
EXPORT_SOURCES = ("model", "finetuned")
HF_DTYPES = ("auto", *DTYPES)


class ExportTab(Panel):
    title = "Export"

    def controls(self) -> list[w.Widget]:
        s = self.studio
        self.source_w = w.Dropdown(options=EXPORT_SOURCES, description="export", layout=w.Layout(width="220px"))
        self.target_w = w.Dropdown(options=TARGETS, description="as", layout=w.Layout(width="180px"),
                                   tooltip="gguf: llama.cpp / Ollama / LM Studio; hf: a merged folder for vLLM / TGI")
        self.quant_w = w.Dropdown(options=ALL_QUANTS, description="quant", layout=w.Layout(width="180px"))
        self.dtype_w = w.Dropdown(options=HF_DTYPES, description="dtype", layout=w.Layout(width="200px"))
        self.path_w = w.Text(description="path", placeholder="model.gguf or a folder", layout=w.Layout(width="420px"))
        self.export_button = w.Button(description="Export", icon="download", button_style="primary")
        self.export_button.on_click(lambda _: self.export())
        self.result = w.HTML("<i>nothing exported yet</i>")
        for trait, widget in (("export_source", self.source_w), ("export_target", self.target_w),
                              ("export_quant", self.quant_w), ("export_dtype", self.dtype_w),
                              ("export_path", self.path_w)):
            link((s, trait), (widget, "value"))
        return [row(self.source_w, self.target_w, self.quant_w, self.dtype_w), self.path_w, self.export_button,
                self.result]

    def action_buttons(self) -> list[w.Button]:
        return [self.export_button]

    def _validate(self):
        s = self.studio
        if not s.export_path.strip():
            raise UserInputError("give a path: a .gguf file name for gguf, a folder for hf")
        if s.export_target not in TARGETS:
            raise UserInputError(f"export as one of {', '.join(TARGETS)}")
        options = {"quant": s.export_quant, "progress": False} if s.export_target == "gguf" else {
            "dtype": None if s.export_dtype == "auto" else s.export_dtype}
        return self.model_from(s.export_source), s.export_target, s.export_path.strip(), options

    def export(self) -> bool:
        """Export in the background; sets ``studio.exported`` (an ``ExportResult``)."""
        s = self.studio
        ok, args = self.checked(self._validate)
        if not ok:
            return False
        handle, target, path, options = args

        def work() -> str:
            from ... import export

            result = export.export(handle, target, path, **options)
            s.exported = result
            command = f"<br>serve it: <code>{esc(result.command)}</code>" if result.command else ""
            self.result.value = f"<code>{esc(result.path)}</code> · {result.size_mb:.1f} MB{command}"
            return f"exported {handle.name} as {target}"

        return self.start(f"Exporting as {target}", work)
