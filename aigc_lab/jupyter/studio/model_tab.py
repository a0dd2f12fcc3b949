"""Model tab: pick a name (starter, hub id, local folder), load it in the background, browse the catalog."""

from __future__ import annotations

from typing import Any

import ipywidgets as w
from traitlets import link

from .common import DEFAULT_MODEL_NAMES, Panel, UserInputError, esc, frame_html, row

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")  # auto: al.models.load's default (models/devices.py decides)


def handle_html(handle: Any) -> str:
    """One line describing a model handle."""
    if handle is None:
        return "<i>none</i>"
    quant = f" · quant {esc(handle.quant)}" if handle.quant else ""
    return (f"<b>{esc(handle.name)}</b> · {esc(handle.kind)} · {handle.params / 1e6:.2f}M params · "
            f"{esc(handle.dtype)}{quant} · {esc(handle.device)}")


class ModelTab(Panel):
    title = "Model"

    def controls(self) -> list[w.Widget]:
        s = self.studio
        self.name_w = w.Combobox(options=DEFAULT_MODEL_NAMES, description="Model", ensure_option=False,
                                 placeholder="starter:gpt-tiny, a hub id, or a local folder",
                                 layout=w.Layout(width="520px"))
        self.dtype_w = w.Dropdown(options=DTYPES, description="dtype", layout=w.Layout(width="200px"))
        self.device_w = w.Dropdown(options=DEVICES, description="device", layout=w.Layout(width="180px"),
                                   tooltip="auto: CUDA when available, else CPU")
        self.load_button = w.Button(description="Load model", icon="download", button_style="primary")
        self.load_button.on_click(lambda _: self.load())
        self.catalog_button = w.Button(description="Catalog", icon="list", tooltip="sizes, memory, fits here?")
        self.catalog_button.on_click(lambda _: self.show_catalog())
        self.info = w.HTML("<i>no model loaded</i>")
        self.catalog_w = w.HTML()
        link((s, "model_name"), (self.name_w, "value"))
        link((s, "model_dtype"), (self.dtype_w, "value"))
        link((s, "model_device"), (self.device_w, "value"))
        return [row(self.name_w, self.dtype_w, self.device_w), row(self.load_button, self.catalog_button), self.info,
                self.catalog_w]

    def action_buttons(self) -> list[w.Button]:
        return [self.load_button, self.catalog_button]

    def load(self) -> bool:
        """Load ``studio.model_name`` in the background; sets ``studio.model``."""
        s = self.studio
        ok, args = self.checked(self._validate)
        if not ok:
            return False
        name, dtype, device = args

        def work() -> str:
            from ...models import load

            handle = load(name, dtype=dtype, device=device)
            s.model = handle
            self.info.value = handle_html(handle)
            return f"loaded {handle.name}"

        return self.start(f"Loading {name}", work)

    def _validate(self) -> tuple[str, str | None, str]:
        s = self.studio
        name = s.model_name.strip()
        if not name:
            raise UserInputError("enter a model name: starter:gpt-tiny, a hub id such as gpt2, or a local folder")
        if s.model_dtype not in DTYPES:
            raise UserInputError(f"dtype must be one of {', '.join(DTYPES)}")
        if s.model_device not in DEVICES:
            raise UserInputError(f"device must be one of {', '.join(DEVICES)}")
        return name, None if s.model_dtype == "auto" else s.model_dtype, s.model_device

    def show_catalog(self) -> bool:
        """Fetch ``al.models.catalog()`` in the background; its names join the Model box's choices."""
        s = self.studio
        if not self.checked(lambda: None)[0]:
            return False

        def work() -> str:
            from ...models import catalog

            table = catalog(device=s.model_device)
            s.catalog = table
            names = [str(n) for n in table["name"]] if "name" in table.columns else []
            self.name_w.options = tuple(dict.fromkeys([*names, *DEFAULT_MODEL_NAMES]))
            self.catalog_w.value = frame_html(table, max_rows=60)
            return f"catalog: {len(table)} models"

        return self.start("Reading the catalog", work)
