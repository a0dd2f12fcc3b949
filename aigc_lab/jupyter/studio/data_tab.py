"""Data tab: load a file, a sample corpus or a DataFrame; optionally clean and split; preview rows and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as w
from traitlets import link

from .common import Panel, UserInputError, esc, frame_html, row

SAMPLES = ("sample:python_docs", "sample:dates")


class DataTab(Panel):
    title = "Data"

    def controls(self) -> list[w.Widget]:
        s = self.studio
        self.source_w = w.Combobox(options=SAMPLES, placeholder="path to csv/tsv/json/jsonl/txt/parquet, or a sample",
                                   description="Source", ensure_option=False, layout=w.Layout(width="520px"))
        self.text_w = w.Text(description="text col", placeholder="auto", layout=w.Layout(width="200px"))
        self.input_w = w.Text(description="input col", placeholder="auto", layout=w.Layout(width="200px"))
        self.target_w = w.Text(description="target col", placeholder="auto", layout=w.Layout(width="200px"))
        self.clean_w = w.Checkbox(description="clean (normalise, dedupe)", indent=False)
        self.val_w = w.FloatText(description="val", step=0.05, layout=w.Layout(width="150px"))
        self.test_w = w.FloatText(description="test", step=0.05, layout=w.Layout(width="150px"))
        self.seed_w = w.IntText(description="seed", layout=w.Layout(width="150px"))
        self.load_button = w.Button(description="Load data", icon="table", button_style="primary")
        self.load_button.on_click(lambda _: self.load())
        self.preview = w.HTML("<i>no data loaded</i>")
        for trait, widget in (("data_source", self.source_w), ("data_text", self.text_w),
                              ("data_input", self.input_w), ("data_target", self.target_w),
                              ("data_clean", self.clean_w), ("data_val", self.val_w), ("data_test", self.test_w),
                              ("data_seed", self.seed_w)):
            link((s, trait), (widget, "value"))
        return [self.source_w, row(self.text_w, self.input_w, self.target_w),
                row(self.clean_w, self.val_w, self.test_w, self.seed_w), self.load_button, self.preview]

    def action_buttons(self) -> list[w.Button]:
        return [self.load_button]

    def load(self, source: Any = None) -> bool:
        """Load ``source`` (default: the Source box) in the background; sets ``studio.dataset`` / ``.splits``."""
        s = self.studio
        ok, source = self.checked(lambda: self._validate(source))
        if not ok:
            return False
        columns = {k: v.strip() for k, v in (("text", s.data_text), ("input", s.data_input),
                                              ("target", s.data_target)) if v.strip()}
        clean, val, test, seed = s.data_clean, s.data_val, s.data_test, s.data_seed
        label = f"Loading {source}" if isinstance(source, str) else f"Loading a {type(source).__name__}"

        def work() -> str:
            from ...data import Dataset, load, samples

            if isinstance(source, Dataset):
                ds = source
            elif isinstance(source, str) and source == "sample:python_docs":
                ds = load(samples.python_docs(), **columns)
            elif isinstance(source, str) and source == "sample:dates":
                ds = load(samples.dates(1000, seed=seed), **columns)
            else:
                ds = load(source, **columns)
            if clean:
                ds = ds.clean()
            splits = ds.split(val=val, test=test, seed=seed) if (val or test) else None
            s.splits = splits
            s.dataset = ds
            self.preview.value = self.preview_html(ds, splits)
            sizes = f" (train {len(splits.train)} / val {len(splits.val)} / test {len(splits.test)})" if splits else ""
            return f"{len(ds)} rows loaded{sizes}"

        return self.start(label, work)

    def _validate(self, source: Any) -> Any:
        s = self.studio
        if not 0 <= s.data_val < 1 or not 0 <= s.data_test < 1 or s.data_val + s.data_test >= 1:
            raise UserInputError("val and test are fractions of the rows: each in [0, 1) and together below 1")
        if source is not None:
            return source
        text = s.data_source.strip()
        if not text:
            raise UserInputError("enter a file path, or pick sample:python_docs or sample:dates")
        if text.startswith("sample:"):
            if text not in SAMPLES:
                raise UserInputError(f"unknown sample {text!r}: choose {' or '.join(SAMPLES)}")
            return text
        path = Path(text).expanduser()
        if not path.exists():
            raise UserInputError(f"file not found: {text} (relative paths start at {Path.cwd()})")
        if path.is_dir():
            raise UserInputError(f"{text} is a folder: give a data file (csv, tsv, json, jsonl, txt, parquet)")
        return str(path)

    @staticmethod
    def preview_html(ds: Any, splits: Any) -> str:
        roles = ", ".join(f"{r}={c!r}" for r, c in ds.roles.items())
        split = ""
        if splits is not None:
            split = " · " + " / ".join(f"{k} {v}" for k, v in splits.sizes().items())
        cols = [c for c in ds.roles.values()]
        report = ds.report.to_frame()
        keep = [c for c in ("step", "rows_in", "rows_out", "changed") if c in report.columns]
        return (f"<b>{len(ds)} rows</b> · {esc(ds.kind)} · {esc(roles)} · from {esc(ds.name)}{esc(split)}"
                f"{frame_html(ds.df[cols], max_rows=5)}<details><summary>steps</summary>"
                f"{frame_html(report[keep] if keep else report)}</details>")
