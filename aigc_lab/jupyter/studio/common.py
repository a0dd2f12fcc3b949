"""What every Studio tab shares: an inline error area, status text, a progress bar, a Stop button, and a
background runner that turns any exception into a readable message (never a traceback in the UI).
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as w
from traitlets import Bool, HasTraits, Unicode

from ...errors import AigcLabError, UserInputError

if TYPE_CHECKING:  # pragma: no cover
    from .app import Studio

FRAME_S = 1 / 30  # UI refresh budget for streamed text: about one update per frame
MODEL_SLOTS = ("model", "finetuned", "quantized")  # where a tab can take its model from
DEFAULT_MODEL_NAMES = (
    "starter:gpt-tiny", "starter:llama-tiny", "starter:t5-tiny", "starter:lstm-tiny", "starter:gpt-small",
    "gpt2", "distilgpt2", "t5-small", "HuggingFaceTB/SmolLM2-135M", "Qwen/Qwen2.5-0.5B",
)


def error_message(exc: BaseException) -> str:
    """The text a user sees for ``exc``: aigc-lab errors as written (they say what to do), others with their type."""
    if isinstance(exc, AigcLabError):
        return str(exc)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def esc(value: Any) -> str:
    return html.escape(str(value))


def frame_html(df: Any, max_rows: int = 10, max_chars: int = 80) -> str:
    """A small, escaped HTML table of a DataFrame (long cells shortened)."""
    if df is None or len(df) == 0:
        return "<i>(empty)</i>"
    head = df.head(max_rows).copy()
    for col in head.columns:
        if head[col].dtype == object:
            head[col] = head[col].map(lambda v: v if len(str(v)) <= max_chars else str(v)[: max_chars - 1] + "…")
    return head.to_html(index=False, escape=True, float_format=lambda x: f"{x:.4g}", border=0)


def row(*widgets: w.Widget) -> w.HBox:
    """A row of controls that wraps onto the next line in a narrow notebook instead of clipping."""
    return w.HBox(list(widgets), layout=w.Layout(flex_flow="row wrap", align_items="center"))


def fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


class Panel(HasTraits):
    """One tab: its controls plus the shared status row. Subclasses build ``controls()`` and actions."""

    title = "Tab"
    stoppable = False

    error = Unicode("", help="the inline error shown in this tab ('' = none)")
    status = Unicode("", help="one line of status text")
    busy = Bool(False, help="a background action of this tab is running")

    def __init__(self, studio: Studio) -> None:
        super().__init__()
        self.studio = studio
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._cancel = threading.Event()  # set by Stop; stoppable actions poll it
        self.error_w = w.HTML(layout=w.Layout(display="none"))
        self.status_w = w.HTML()
        # Fixed-size, non-shrinking parts of the status row: a long status line wraps instead of squeezing
        # the Stop label to "S…"; the idle progress bar takes no room (display none, not visibility hidden).
        self.progress = w.IntProgress(value=0, min=0, max=100,
                                      layout=w.Layout(width="200px", flex="0 0 auto", display="none"))
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger", disabled=True,
                                    tooltip="cancel the running action",
                                    layout=w.Layout(width="auto", min_width="84px", flex="0 0 auto"))
        self.stop_button.on_click(lambda _: self.stop())
        self.observe(self._show_error, "error")
        self.observe(self._show_status, "status")
        self.observe(self._show_busy, "busy")

    # -- view ------------------------------------------------------------------------------------

    def controls(self) -> list[w.Widget]:  # pragma: no cover - every tab overrides it
        raise NotImplementedError

    def build(self) -> w.Widget:
        row = [self.progress, self.status_w]
        if self.stoppable:
            row.insert(0, self.stop_button)
        self.status_w.layout = w.Layout(flex="1 1 auto", min_width="0")
        status_row = w.HBox(row, layout=w.Layout(align_items="center", grid_gap="8px"))
        return w.VBox([*self.controls(), status_row, self.error_w])

    def _show_error(self, change: dict[str, Any]) -> None:
        msg = change["new"]
        if msg:
            self.error_w.value = ("<div style='color:#b00020;border-left:3px solid #b00020;padding:2px 8px;"
                                  f"white-space:pre-wrap'>⚠ {esc(msg)}</div>")
            self.error_w.layout.display = None
        else:
            self.error_w.value = ""
            self.error_w.layout.display = "none"

    def _show_status(self, change: dict[str, Any]) -> None:
        self.status_w.value = esc(change["new"])

    def _show_busy(self, change: dict[str, Any]) -> None:
        busy = change["new"]
        self.stop_button.disabled = not busy
        self.progress.layout.display = None if busy else "none"
        for button in self.action_buttons():
            button.disabled = busy

    def action_buttons(self) -> list[w.Button]:
        return []

    # -- actions ---------------------------------------------------------------------------------

    def fail(self, message: str) -> None:
        """Show ``message`` inline (validation before any background work)."""
        self.error = message

    def checked(self, validate: Callable[[], Any]) -> tuple[bool, Any]:
        """Refuse while busy, then run ``validate``; a ``UserInputError`` / ``AigcLabError`` becomes the inline error.

        Every action calls this first, so a click while the tab is busy changes nothing.
        """
        if self.busy:
            self.error = self._busy_message()
            return False, None
        try:
            return True, validate()
        except AigcLabError as exc:
            self.error = error_message(exc)
            return False, None

    def start(self, label: str, work: Callable[[], str | None], *, determinate: bool = False) -> bool:
        """Run ``work`` on a background thread with progress and status; False if this tab is busy.

        ``work`` returns the final status line (or None). An exception becomes the inline error. With
        ``determinate=False`` the progress bar pulses while the work runs.
        """
        with self._lock:
            if self.busy:
                self.error = self._busy_message()
                return False
            self.busy = True
        self.error = ""
        self.status = f"{label}…"
        self.progress.bar_style = "info"
        self.progress.max, self.progress.value = 100, 0
        t0 = time.perf_counter()

        def target() -> None:
            ticker_stop = threading.Event()
            if not determinate:
                threading.Thread(target=self._pulse, args=(ticker_stop, label, t0), daemon=True).start()
            try:
                final = work()
                self.progress.bar_style = "success"
                self.status = final if final is not None else f"{label}: done in {time.perf_counter() - t0:.1f} s"
            except BaseException as exc:  # noqa: BLE001 - shown inline, never as a traceback
                self.progress.bar_style = "danger"
                self.status = f"{label}: failed"
                self.error = error_message(exc)
            finally:
                ticker_stop.set()
                self.busy = False
                self.studio._action_finished(self)

        self._thread = threading.Thread(target=target, name=f"aigc-lab-studio-{self.title.lower()}", daemon=True)
        self.studio._track(self._thread)
        self._thread.start()
        return True

    def _busy_message(self) -> str:
        todo = "wait for it or press Stop" if self.stoppable else "wait for it to finish"
        return f"{self.title}: an action is already running; {todo}"

    def _pulse(self, stop: threading.Event, label: str, t0: float) -> None:
        value = 0
        while not stop.wait(0.15):
            value = (value + 10) % 110
            self.progress.value = value
            self.status = f"{label}… {time.perf_counter() - t0:.1f} s"

    def stop(self) -> None:
        """Cancel the running action, where the tab supports it."""

    def wait(self, timeout: float | None = None) -> bool:
        """Block until this tab's background action ends; True when idle."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # -- helpers for subclasses -------------------------------------------------------------------

    def model_from(self, slot: str) -> Any:
        """The handle in the Studio slot ``slot`` (model / finetuned / quantized) or a UserInputError."""
        if slot not in MODEL_SLOTS:
            raise UserInputError(f"unknown model {slot!r}: choose one of {', '.join(MODEL_SLOTS)}")
        handle = getattr(self.studio, slot)
        if handle is None:
            raise UserInputError({"model": "no model yet: load one in the Model tab",
                                  "finetuned": "no fine-tuned model yet: run the Fine-tune tab first",
                                  "quantized": "no quantized model yet: quantize one in the Optimise tab"}[slot])
        return handle


def follow(panel: Panel, stream: Any, render: Callable[[str], None]) -> str:
    """Iterate ``stream`` (re-raising its error), rendering the text so far about once a frame and once at the end,
    with the panel's progress bar and status; the panel's Stop cancels it. Returns the whole text."""
    if panel._cancel.is_set():
        stream.cancel()
    parts: list[str] = []
    last = 0.0
    try:
        for token in stream:
            parts.append(token.text)
            if panel._cancel.is_set():
                stream.cancel()
            now = time.perf_counter()
            if now - last >= FRAME_S:
                last = now
                render("".join(parts))
                panel.progress.value = min(token.i + 1, panel.progress.max)
                panel.status = f"generating… {len(parts)} tokens"
    finally:
        render("".join(parts))
    return "".join(parts)
