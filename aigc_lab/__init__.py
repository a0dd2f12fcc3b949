"""aigc-lab: from raw data to a fine-tuned, quantized model streaming tokens, inside a notebook.

``import aigc_lab as al`` is cheap: the torch-backed parts (``al.models``, ``al.generate``) load on
first use. Inside a Jupyter kernel the import also opens the comm to the JupyterLab panel.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

from . import errors, events, log_filters, runs  # noqa: E402
from .bus import bus, recorder  # noqa: E402
from .errors import AigcLabError  # noqa: E402

log_filters.install()

_LAZY = {
    "models": ("aigc_lab.models", None),
    "data": ("aigc_lab.data", None),
    "infer": ("aigc_lab.infer", None),
    "jupyter": ("aigc_lab.jupyter", None),
    "bench": ("aigc_lab.bench", None),
    "generate": ("aigc_lab.infer", "generate"),
    "chat": ("aigc_lab.infer.chat", "chat"),
    "Conversation": ("aigc_lab.infer.chat", "Conversation"),
    "quantize": ("aigc_lab.models.quantize", "quantize"),
    "prune": ("aigc_lab.bench.pruning", "prune"),  # the surgery is models/prune.py; the report needs the engine
    "compare": ("aigc_lab.bench.compare", "compare"),
    "train": ("aigc_lab.train", None),
    "finetune": ("aigc_lab.train", "finetune"),
    "export": ("aigc_lab.export", None),  # a callable module: al.export(handle, target, path, **options)
    "Studio": ("aigc_lab.jupyter.studio", "Studio"),
}

__all__ = ["AigcLabError", "bus", "errors", "events", "recorder", "runs", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'aigc_lab' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = getattr(module, attr) if attr else module
    globals()[name] = value
    return value


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext aigc_lab``: register the ``%aigc`` magics (and connect the panel, in a kernel)."""
    importlib.import_module("aigc_lab.jupyter.magics").register(shell)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the built JupyterLab extension lives (used by ``jupyter-builder develop``)."""
    return [{"src": "labextension", "dest": "aigc-lab"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The Jupyter server extension (low-latency kernel websockets), see ``aigc_lab.jupyter.server_extension``."""
    return [{"module": "aigc_lab.jupyter.server_extension"}]


def _in_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


if _in_kernel():  # the panel and magics are enhancements: never let them break the import
    try:
        importlib.import_module("aigc_lab.jupyter").connect()
        load_ipython_extension(sys.modules["IPython"].get_ipython())
    except Exception as exc:  # noqa: BLE001
        print(f"aigc_lab: panel connection unavailable ({exc}); everything else works", file=sys.stderr)
