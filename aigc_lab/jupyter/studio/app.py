"""``Studio()``: the whole workflow as one ipywidgets app (Data | Model | Fine-tune | Optimise | Generate | Chat
| Compare | Export).

Every control is a trait of the ``Studio`` (a ``traitlets.HasTraits``) linked both ways to its widget, so
``studio.max_new_tokens = 32`` moves the widget, moving the widget changes the trait, and
``studio.observe(fn, "model")`` follows results as they arrive. Long actions run on background threads
with a progress bar and status line (Stop where it can cancel); errors show inline in their tab.
Results land in ``studio.dataset``, ``.splits``, ``.model``, ``.run``, ``.finetuned``, ``.quantized``, ``.exported``,
``.stream``, ``.conversation`` and ``.comparison``. ``studio.wait()`` blocks until every background action has ended.
Displayed, the Studio also carries a static ``text/html`` / ``text/plain`` summary, so a notebook
reopened without its kernel still shows what was done; the ``STUDIO_MIMETYPE`` marker lets the aigc-lab
JupyterLab extension show that summary where the widget's model is gone.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import ipywidgets as w
from traitlets import Any as AnyTrait
from traitlets import Bool, Enum, Float, HasTraits, Int, TraitError, Tuple, Unicode, validate

from ...export.gguf import ALL_QUANTS
from .chat_tab import TEMPLATES as CHAT_TEMPLATES
from .chat_tab import ChatTab
from .common import MODEL_SLOTS, Panel, esc, frame_html
from .compare_tab import CompareTab
from .data_tab import DataTab
from .export_tab import EXPORT_SOURCES, HF_DTYPES, TARGETS, ExportTab
from .finetune_tab import METHODS, FinetuneTab
from .generate_tab import GenerateTab, metrics_text
from .model_tab import DEVICES, DTYPES, ModelTab
from .optimise_tab import SCHEMES, SOURCES, OptimiseTab

_SUMMARY_TEXT_CHARS = 2000
_SUMMARY_TURNS = 6  # the Chat tab's last turns in the static summary
# Marker of a Studio output. The aigc-lab JupyterLab extension renders it (src/staticfallback.ts): the live
# widget while the widget manager has its model, else the text/html summary instead of "model not found".
# Front ends without the extension ignore it (classic Notebook, nbconvert: the widget view or text/html).
STUDIO_MIMETYPE = "application/vnd.aigc-lab.studio+json"


class Studio(HasTraits):
    """An ipywidgets app for the aigc-lab workflow; every control is a trait, every result an attribute."""

    # -- Data tab ---------------------------------------------------------------------------------
    data_source = Unicode("sample:python_docs", help="file path, or sample:python_docs / sample:dates")
    data_text = Unicode("", help="text column ('' = detect)")
    data_input = Unicode("", help="input column for pairs ('' = detect)")
    data_target = Unicode("", help="target column for pairs ('' = detect)")
    data_clean = Bool(False, help="normalise and remove duplicates after loading")
    data_val = Float(0.1, help="validation fraction (0 = no split)")
    data_test = Float(0.0, help="test fraction")
    data_seed = Int(0, help="seed of the split (and of sample:dates)")
    # -- Model tab --------------------------------------------------------------------------------
    model_name = Unicode("starter:gpt-tiny", help="starter:*, a hub id or a local folder")
    model_dtype = Enum(DTYPES, default_value="auto")
    model_device = Enum(DEVICES, default_value="auto", help="'auto' = CUDA when available, else CPU (as load())")
    # -- Fine-tune tab ----------------------------------------------------------------------------
    ft_method = Enum(METHODS, default_value="lora")
    ft_max_steps = Int(50)
    ft_lr = Float(0.0, help="0 = the method's default")
    ft_batch_size = Int(8)
    ft_output_dir = Unicode("", help="'' = ./aigc_runs/<run id>")
    ft_teacher = Unicode("", help="distill: finetuned / quantized (a Studio slot), a model name or a local folder")
    # -- Optimise tab -----------------------------------------------------------------------------
    quant_scheme = Enum(SCHEMES, default_value="int8")
    quant_source = Enum(SOURCES, default_value="model")
    # -- Generate tab -----------------------------------------------------------------------------
    gen_model = Enum(MODEL_SLOTS, default_value="model", help="which of the Studio's models generates")
    prompt = Unicode("Once upon a time")
    max_new_tokens = Int(64)
    temperature = Float(0.8, help="0 = greedy")
    top_k = Int(50, help="0 = off")
    seed = Int(0)
    ignore_eos = Bool(False)
    # -- Chat tab ---------------------------------------------------------------------------------
    chat_model = Enum(MODEL_SLOTS, default_value="model", help="which of the Studio's models answers")
    chat_template = Enum(CHAT_TEMPLATES, default_value="auto", help="auto = the model's own chat template")
    chat_system = Unicode("", help="system message ('' = none); changing it starts a new conversation")
    chat_message = Unicode("", help="the next user message (cleared when sent)")
    chat_max_new_tokens = Int(64)
    chat_temperature = Float(0.0, help="0 = greedy")
    # -- Compare tab ------------------------------------------------------------------------------
    compare_models = Tuple(help="slots to compare (model / finetuned / quantized); empty = all the Studio holds")
    compare_prompts = Unicode("", help="one prompt per line; empty = 4 prompts from the dataset")
    compare_max_new_tokens = Int(16)
    # -- Export tab -------------------------------------------------------------------------------
    export_source = Enum(EXPORT_SOURCES, default_value="finetuned")
    export_target = Enum(TARGETS, default_value="gguf")
    export_quant = Enum(ALL_QUANTS, default_value="q8_0")
    export_dtype = Enum(HF_DTYPES, default_value="auto", help="hf: the folder's dtype ('auto' = the model's)")
    export_path = Unicode("model.gguf", help="a .gguf file (gguf) or a folder (hf)")
    # -- results (set by the actions; observable) -----------------------------------------------------
    dataset = AnyTrait(None, allow_none=True, help="aigc_lab.data.Dataset")
    splits = AnyTrait(None, allow_none=True, help="aigc_lab.data.Splits (when val/test > 0)")
    model = AnyTrait(None, allow_none=True, help="the loaded ModelHandle")
    run = AnyTrait(None, allow_none=True, help="the last fine-tuning TrainRun")
    finetuned = AnyTrait(None, allow_none=True, help="ModelHandle of the last fine-tuning run that ended ok")
    quantized = AnyTrait(None, allow_none=True, help="the last quantized ModelHandle")
    stream = AnyTrait(None, allow_none=True, help="the last generation's TokenStream")
    conversation = AnyTrait(None, allow_none=True, help="the Chat tab's al.Conversation")
    generated_text = Unicode("", help="text of the last generation")
    comparison = AnyTrait(None, allow_none=True, help="DataFrame from the last Compare")
    exported = AnyTrait(None, allow_none=True, help="ExportResult of the last Export")
    catalog = AnyTrait(None, allow_none=True, help="DataFrame from the Model tab's Catalog button")
    busy = Bool(False, help="some tab is running a background action")

    def __init__(self, **traits: Any) -> None:
        super().__init__(**traits)
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self._display_handle: Any = None
        self._shown_summary = ""
        self.data_tab = DataTab(self)
        self.model_tab = ModelTab(self)
        self.finetune_tab = FinetuneTab(self)
        self.optimise_tab = OptimiseTab(self)
        self.generate_tab = GenerateTab(self)
        self.chat_tab = ChatTab(self)
        self.compare_tab = CompareTab(self)
        self.export_tab = ExportTab(self)
        self.tabs: dict[str, Panel] = {p.title: p for p in (self.data_tab, self.model_tab, self.finetune_tab,
                                                             self.optimise_tab, self.generate_tab, self.chat_tab,
                                                             self.compare_tab, self.export_tab)}
        pages = [p.build() for p in self.tabs.values()]
        self.widget = w.Tab(children=pages, titles=tuple(self.tabs))
        header = w.HTML("<b>aigc-lab Studio</b> · data → model → fine-tune → optimise → generate → compare → export")
        self.view = w.VBox([header, self.widget])

    @validate("compare_models")
    def _check_compare_models(self, proposal: dict[str, Any]) -> tuple[str, ...]:
        value = tuple(proposal["value"])
        bad = [v for v in value if v not in MODEL_SLOTS]
        if bad:
            raise TraitError(f"compare_models: unknown {bad}; choose from {MODEL_SLOTS}")
        return value

    # -- actions, callable from code (the buttons call the same methods) ------------------------------

    def load_data(self, source: Any = None) -> bool:
        """Data tab: load ``source`` (a DataFrame, list, Dataset or path) or, by default, ``data_source``."""
        return self.data_tab.load(source)

    def load_model(self) -> bool:
        """Model tab: load ``model_name``."""
        return self.model_tab.load()

    def finetune(self) -> bool:
        """Fine-tune tab: fine-tune ``model`` on ``splits`` (or ``dataset``)."""
        return self.finetune_tab.finetune()

    def quantize(self) -> bool:
        """Optimise tab: quantize the ``quant_source`` model with ``quant_scheme``."""
        return self.optimise_tab.quantize()

    def generate(self) -> bool:
        """Generate tab: stream a continuation of ``prompt``."""
        return self.generate_tab.generate()

    def chat(self) -> bool:
        """Chat tab: send ``chat_message`` to ``conversation`` and stream the reply."""
        return self.chat_tab.send()

    def compare(self) -> bool:
        """Compare tab: ``al.compare`` over the chosen models."""
        return self.compare_tab.compare()

    def export(self) -> bool:
        """Export tab: write the ``export_source`` model as ``export_target`` at ``export_path``."""
        return self.export_tab.export()

    def stop(self) -> None:
        """Stop whatever can be stopped (generation, fine-tuning)."""
        for panel in self.tabs.values():
            if panel.busy:
                panel.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every background action has ended (or ``timeout`` s passed); True when idle."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._threads_lock:
                alive = [t for t in self._threads if t.is_alive()]
                self._threads = alive
            if not alive:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            alive[0].join(left)

    join = wait

    @property
    def errors(self) -> dict[str, str]:
        """The inline error of each tab that shows one."""
        return {title: p.error for title, p in self.tabs.items() if p.error}

    # -- bookkeeping for the tabs -------------------------------------------------------------------

    def _track(self, thread: threading.Thread) -> None:
        with self._threads_lock:
            self._threads.append(thread)
        self.busy = True

    def _action_finished(self, panel: Panel) -> None:
        self.busy = any(p.busy for p in self.tabs.values())
        self._refresh_display()

    # -- static summary (what a notebook keeps without a kernel) ------------------------------------

    def _sections(self) -> list[tuple[str, str, str]]:
        """(tab, plain text, html) for each tab's state."""
        out: list[tuple[str, str, str]] = []
        ds = self.dataset
        if ds is not None:
            sizes = f" (train/val/test {'/'.join(str(v) for v in self.splits.sizes().values())})" if self.splits else ""
            txt = f"{len(ds)} rows, {ds.kind}, from {ds.name}{sizes}"
            out.append(("Data", txt, esc(txt)))
        for title, handle in (("Model", self.model), ("Quantized", self.quantized), ("Fine-tuned", self.finetuned)):
            if handle is not None:
                quant = f", quant {handle.quant}" if handle.quant else ""
                txt = f"{handle.name}: {handle.kind}, {handle.params / 1e6:.2f}M params, {handle.dtype}{quant}"
                out.append((title, txt, esc(txt)))
        run = self.run
        if run is not None:
            txt = f"run {run.run} ({run.config.method}): {run.status}, step {run.step}"
            out.append(("Fine-tune", txt, esc(txt)))
        stream = self.stream
        if stream is not None:
            line = metrics_text(stream)
            text = "".join(t.text for t in list(stream.tokens))
            short = text if len(text) <= _SUMMARY_TEXT_CHARS else text[:_SUMMARY_TEXT_CHARS] + "…"
            txt = f"{stream.handle.name}: {line}\n{stream.prompt}{short}"
            html_ = (f"{esc(stream.handle.name)}: {esc(line)}<pre style='white-space:pre-wrap;margin:2px 0'>"
                     f"<span style='opacity:0.55'>{esc(stream.prompt)}</span>{esc(short)}</pre>")
            out.append(("Generate", txt, html_))
        conversation = self.conversation
        if conversation is not None and conversation.messages:
            turns = conversation.messages[-_SUMMARY_TURNS:]
            txt = "\n".join(f"{t['role']}: {t['content']}" for t in turns)
            name = conversation.model.name
            out.append(("Chat", f"{name}\n{txt}",
                        f"{esc(name)}<pre style='white-space:pre-wrap;margin:2px 0'>{esc(txt)}</pre>"))
        table = self.comparison
        if table is not None:
            out.append(("Compare", table.to_string(index=False, max_colwidth=40), frame_html(table)))
        if self.exported is not None:
            txt = str(self.exported)
            out.append(("Export", txt, f"<pre style='white-space:pre-wrap;margin:0'>{esc(txt)}</pre>"))
        for title, msg in self.errors.items():
            out.append((f"{title} error", msg, f"<span style='color:#b00020'>{esc(msg)}</span>"))
        return out

    def summary_text(self) -> str:
        sections = self._sections()
        if not sections:
            return "aigc-lab Studio: nothing loaded yet"
        return "aigc-lab Studio\n" + "\n".join(f"  {title}: {txt}" for title, txt, _ in sections)

    def summary_html(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left;vertical-align:top;padding-right:8px'>{esc(title)}</th>"
                       f"<td style='text-align:left'>{html_}</td></tr>" for title, _, html_ in self._sections())
        body = f"<table>{rows}</table>" if rows else "<i>nothing loaded yet</i>"
        return f"<div class='aigc-lab-studio-summary'><b>aigc-lab Studio</b>{body}</div>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.view._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["text/plain"] = self.summary_text()
        bundle["text/html"] = self.summary_html()
        view = bundle.get("application/vnd.jupyter.widget-view+json")
        if isinstance(view, dict) and view.get("model_id"):
            bundle[STUDIO_MIMETYPE] = {"version": 1, "model_id": view["model_id"]}
        return bundle

    def _ipython_display_(self) -> None:
        from IPython.display import display

        self._shown_summary = self.summary_html()
        self._display_handle = display(self._repr_mimebundle_(), raw=True, display_id=True)

    def _refresh_display(self) -> None:
        """After an action: refresh the displayed summary (the static part a saved notebook keeps)."""
        handle = self._display_handle
        if handle is None:
            return
        summary = self.summary_html()
        if summary == self._shown_summary:
            return
        self._shown_summary = summary
        try:
            handle.update(self._repr_mimebundle_(), raw=True)
        except Exception:  # noqa: BLE001 - the live widget is what matters; the summary is best effort
            pass

    def __repr__(self) -> str:
        return self.summary_text()
