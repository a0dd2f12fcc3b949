"""al.Studio() rendered by JupyterLab's widget manager in a real notebook, driven from code, screenshotted."""

from __future__ import annotations

from pathlib import Path

from aigc_ui_harness import STEP_TIMEOUT, Lab

DOCS_STUDIO_PNG = Path(__file__).resolve().parent.parent / "docs" / "studio.png"
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
    assert labels[:6] == ["Data", "Model", "Fine-tune", "Optimise", "Generate", "Compare"], labels

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
    lab.page.wait_for_timeout(300)
    tabs.screenshot(path=str(DOCS_STUDIO_PNG))
    assert 2_000 < DOCS_STUDIO_PNG.stat().st_size < 200_000, DOCS_STUDIO_PNG.stat().st_size
