"""al.Studio() rendered by JupyterLab's widget manager in a real notebook, driven from code, screenshotted."""

from __future__ import annotations

import json
from pathlib import Path

from aigc_ui_harness import SCREENSHOTS, STEP_TIMEOUT, Lab

STUDIO_PNG = SCREENSHOTS / "studio.png"
_RUN_IN_CELL = """async (code) => {
  const nb = window.jupyterapp.shell.currentWidget;
  nb.content.activeCell.model.sharedModel.setSource(code);
  await window.jupyterapp.commands.execute('notebook:run-cell');
}"""


def test_studio_renders_and_streams_in_a_notebook(lab: Lab):
    nb = lab.open_notebook()
    nb.wait_panel_follows()
    lab.page.evaluate(_RUN_IN_CELL, "import aigc_lab as al\nstudio = al.Studio()\nstudio")
    tabs = lab.page.locator(".jp-OutputArea-output .widget-tab").first
    tabs.wait_for(state="visible", timeout=180_000)
    labels = lab.page.locator(".jp-OutputArea-output .widget-tab .lm-TabBar-tabLabel").all_inner_texts()
    assert labels[:8] == ["Data", "Model", "Fine-tune", "Optimise", "Generate", "Chat", "Compare", "Export"], labels

    out = nb.execute(
        "studio.load_model(); studio.wait()\n"
        "studio.prompt = 'The interpreter'; studio.max_new_tokens = 24; studio.temperature = 0.8; studio.seed = 0\n"
        "studio.generate(); studio.wait()\n"
        "studio.widget.selected_index = 4\n"
        "print(studio.stream.status, len(studio.stream.ids))",
        timeout=180,
    )
    assert out.stdout.split() == ["ok", "24"], out.stdout
    lab.page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-OutputArea-output .widget-tab .lm-TabBar-tab.lm-mod-current')]"
        ".some(t => t.textContent.includes('Generate'))", timeout=STEP_TIMEOUT * 1000)
    lab.page.wait_for_function(
        "() => document.querySelector('.jp-OutputArea-output .widget-tab').innerText.includes('tok/s')",
        timeout=STEP_TIMEOUT * 1000)
    lab.next_frames()
    STUDIO_PNG.parent.mkdir(parents=True, exist_ok=True)
    tabs.screenshot(path=str(STUDIO_PNG))
    assert 2_000 < STUDIO_PNG.stat().st_size < 200_000, STUDIO_PNG.stat().st_size


# -- a saved Studio output reopened without its widget model -------------------------------------

STUDIO_MIME = "application/vnd.aigc-lab.studio+json"
FALLBACK_PNG = Path(__file__).resolve().parent / "artifacts" / "studio_static_fallback.png"
_SAVE_AND_CLOSE = """async (path) => {
  const w = window.__aigc.nbs[path];
  await w.context.save();
  if (w.sessionContext.session) { await w.sessionContext.shutdown(); }
  w.dispose();
  delete window.__aigc.nbs[path];
}"""
# Opens ``path`` with a kernel (the default: a fresh one, which never had the Studio's widget model) or,
# with ``kernel: false``, with none (a one-off widget extension turns the session's autostart off).
_REOPEN = """async ({path, kernel, timeout}) => {
  const app = window.jupyterapp;
  let ext = null;
  if (!kernel) {
    ext = app.docRegistry.addWidgetExtension('Notebook', {createNew: (panel, context) => {
      if (context.path === path) {
        context.sessionContext.kernelPreference = {...context.sessionContext.kernelPreference, shouldStart: false};
      }
    }});
  }
  try {
    const w = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
    window.__aigc.nbs[path] = w;
    await w.context.ready;
    await w.sessionContext.ready;
    const t0 = Date.now();
    while (kernel) {
      const k = w.sessionContext.session && w.sessionContext.session.kernel;
      if (k && k.connectionStatus === 'connected' && k.status === 'idle') break;
      if (Date.now() - t0 > timeout) throw new Error('kernel of ' + path + ' not idle');
      await new Promise(r => setTimeout(r, 25));
    }
    const cell = w.content.widgets[0];
    return {id: w.id, kernel: !!(w.sessionContext.session && w.sessionContext.session.kernel),
            trusted: cell.model.trusted};
  } finally {
    if (ext) ext.dispose();
  }
}"""
_OUTPUT_STATE = """(id) => {
  const nb = document.getElementById(id);
  const out = nb && nb.querySelector('.aigc-studio-output');
  const summary = out && out.querySelector('.aigc-studio-summary');
  return {view: out ? out.getAttribute('data-aigc-studio-view') : null,
          summaryVisible: !!summary && summary.offsetParent !== null && summary.innerText.length > 0,
          summary: summary ? summary.innerText : '', text: nb ? nb.innerText : ''};
}"""


def _wait_view(lab: Lab, widget_id: str, view: str, timeout: float = STEP_TIMEOUT) -> dict:
    lab.page.wait_for_function(
        "([id, view]) => { const o = document.getElementById(id)?.querySelector('.aigc-studio-output');"
        " return !!o && o.getAttribute('data-aigc-studio-view') === view; }",
        arg=[widget_id, view], timeout=timeout * 1000)
    return lab.page.evaluate(_OUTPUT_STATE, widget_id)


def _wait_settled(lab: Lab, widget_id: str, timeout: float = STEP_TIMEOUT) -> None:
    lab.page.wait_for_function(
        "(id) => document.getElementById(id)?.querySelector('.aigc-studio-output')"
        "?.getAttribute('data-aigc-studio-settled') === 'true'", arg=widget_id, timeout=timeout * 1000)


def test_saved_studio_output_shows_its_summary_without_the_widget_model(lab: Lab):
    nb = lab.open_notebook("studio-saved.ipynb")
    nb.activate()
    lab.page.evaluate(_RUN_IN_CELL, "import aigc_lab as al\nstudio = al.Studio()\nstudio.load_model(); studio.wait()\n"
                                    "studio")
    # Live, in its kernel: our renderer shows the ipywidgets view, the summary stays hidden.
    live = _wait_view(lab, nb.widget_id, "live", timeout=180)
    assert not live["summaryVisible"] and "Fine-tune" in live["text"], live
    lab.page.evaluate(_SAVE_AND_CLOSE, nb.path)
    saved = json.loads((lab.server.root_dir / nb.path).read_text())
    data = saved["cells"][0]["outputs"][0]["data"]
    assert STUDIO_MIME in data and "application/vnd.jupyter.widget-view+json" in data, list(data)
    assert "widgets" not in saved["metadata"]  # no saved widget state: the model exists nowhere

    # Reopened with a fresh kernel (JupyterLab's default), where ipywidgets says "model not found".
    info = lab.page.evaluate(_REOPEN, {"path": nb.path, "kernel": True, "timeout": 60_000})
    assert info["kernel"] and info["trusted"], info  # a trusted output: the widget renderer would be chosen
    # the widget manager of the new kernel has answered for this output (model not found): the view is final
    _wait_settled(lab, info["id"])
    state = lab.page.evaluate(_OUTPUT_STATE, info["id"])
    assert state["view"] == "summary" and state["summaryVisible"], state
    assert "aigc-lab Studio" in state["summary"] and "starter:gpt-tiny" in state["summary"], state
    assert "model not found" not in state["text"] and "Error displaying widget" not in state["text"], state
    lab.page.locator(f"#{info['id']} .jp-Cell").first.screenshot(path=str(FALLBACK_PNG))
    lab.page.evaluate(_SAVE_AND_CLOSE, nb.path)

    # Reopened with no kernel at all.
    info = lab.page.evaluate(_REOPEN, {"path": nb.path, "kernel": False, "timeout": 60_000})
    assert not info["kernel"] and info["trusted"], info
    _wait_view(lab, info["id"], "summary")
    # its session is ready with no kernel (asserted above), so no widget manager will come: the summary is final
    state = lab.page.evaluate(_OUTPUT_STATE, info["id"])
    assert state["view"] == "summary" and state["summaryVisible"] and "starter:gpt-tiny" in state["summary"], state
    assert "Loading widget" not in state["text"] and "model not found" not in state["text"], state
    lab.page.evaluate(_SAVE_AND_CLOSE, nb.path)
