"""Issue 15 in a real browser: a chat run's turns in its card, and the generative eval metrics chart.

Run: ``flock /tmp/aigc-ui.lock .venv/bin/python -m pytest ui-tests/test_chat_panel.py -x -q``

- ``test_chat_turns_in_the_card``: ``al.chat`` on the starter model with a 10-turn conversation (plain
  template): the card lists the last turns (roles and contents as the kernel recorded them in
  ``run.start.config.chat``), says how many earlier ones it hides, shows them all on expand, labels the
  streamed reply as the assistant's; axe finds nothing serious in the card; writes ``chat-turns.png``.
- ``test_eval_metrics_chart``: a short full fine-tune of a small starter on generated catalogue chats with
  ``eval_every`` and generative eval (``eval_generate``): every ``train.eval.metrics`` arrives, the "Eval
  metrics" chart draws one series per metric, its text summary names each metric's latest and best value,
  the card's train line shows the last eval's metrics; writes ``eval-metrics.png``.
"""

from __future__ import annotations

import json
import re

import pytest
from aigc_ui_harness import SCREENSHOTS, STEP_TIMEOUT, Lab, Notebook
from test_a11y import _axe
from test_panel import MODEL_LOAD_TIMEOUT, STARTER, connect, screenshot_panel, wait_chart

CHAT_PNG = SCREENSHOTS / "chat-turns.png"
EVAL_PNG = SCREENSHOTS / "eval-metrics.png"

# a system turn, then user / assistant turns, ending with the user's: 10 turns, more than the card shows
CONVERSATION = [{"role": "system", "content": "You answer questions about the interpreter, briefly."}]
for _k, _q in enumerate(["What is a tuple?", "And a list?", "Which one is mutable?", "How do I copy a list?"]):
    CONVERSATION.append({"role": "user", "content": _q})
    if _k < 3:
        CONVERSATION.append({"role": "assistant", "content": ["An immutable sequence.", "A mutable sequence.",
                                                               "The list."][_k]})
CONVERSATION.append({"role": "assistant", "content": "Use list.copy() or a slice."})
CONVERSATION.append({"role": "user", "content": "Thanks. And a dict?"})


@pytest.fixture(scope="module")
def starter(lab) -> Notebook:
    nb = lab.open_notebook()
    connect(nb)
    nb.execute(f"import aigc_lab as al\nm = al.models.load({STARTER!r})", timeout=MODEL_LOAD_TIMEOUT)
    return nb


def _turns(lab: Lab, run: str) -> list[dict]:
    return lab.page.evaluate(
        """(id) => [...document.querySelectorAll(
                 `#aigc-lab-panel .aigc-run[data-run-id="${id}"] ol.aigc-chat-turns > li.aigc-chat-turn`)]
               .filter(li => li.offsetHeight > 0)
               .map(li => ({role: li.getAttribute('data-role'), turn: Number(li.getAttribute('data-turn')),
                            label: li.querySelector('.aigc-chat-role').textContent,
                            content: li.querySelector('.aigc-chat-content').textContent}))""", run)


def _wait_turns(lab: Lab, run: str, n: int) -> list[dict]:
    """Wait until run ``run``'s card lists ``n`` turns; fail with the turns it lists."""
    try:
        lab.page.wait_for_function(
            """([id, n]) => document.querySelectorAll(`#aigc-lab-panel .aigc-run[data-run-id="${id}"]`
                 + ' ol.aigc-chat-turns > li.aigc-chat-turn').length === n""",
            arg=[run, n], timeout=STEP_TIMEOUT * 1000)
    except Exception:  # noqa: BLE001
        pytest.fail(f"the card of {run} should list {n} turns; lists {_turns(lab, run)}")
    return _turns(lab, run)


def test_chat_turns_in_the_card(lab, starter):
    starter.wait_panel_follows()
    res = starter.execute(
        "import json\n"
        f"_conv = {json.dumps(CONVERSATION)}\n"
        "s = al.chat(m, _conv, chat_template='plain', max_new_tokens=16)\n"
        "_text = s.text\n"
        "print(json.dumps({'run': s.run, 'text': _text,"
        " 'chat': aigc_lab.recorder[s.run].start.config['chat']}))",
        timeout=120,
    )
    out = res.json_lines()[-1]
    run, chat = out["run"], out["chat"]
    n = len(CONVERSATION)
    assert chat["template"] == "plain" and chat["messages"] == CONVERSATION, chat
    attrs = lab.wait_run(run, "ok")
    assert attrs["text"] == out["text"], (attrs["text"], out["text"])
    card = lab.run_el(run)
    section = card.locator("section.aigc-chat")
    assert section.is_visible()
    assert section.get_attribute("data-template") == "plain"
    assert section.get_attribute("data-turn-count") == str(n)
    assert card.locator(".aigc-chat-template").inner_text() == "template: plain"
    # The last 6 turns, in order, as the kernel recorded them; the earlier ones behind a button.
    shown = _wait_turns(lab, run, 6)
    assert [(t["role"], t["content"]) for t in shown] == [(t["role"], t["content"])
                                                          for t in chat["messages"][-6:]], shown
    assert [t["turn"] for t in shown] == list(range(n - 6, n))
    assert {t["role"]: t["label"] for t in shown} == {"user": "User", "assistant": "Assistant"}
    assert card.locator(".aigc-chat-earlier-note").inner_text() == f"{n - 6} earlier turns not shown"
    expand = card.locator("button.aigc-chat-expand")
    assert expand.get_attribute("aria-expanded") == "false"
    expand.click()
    every = _wait_turns(lab, run, n)
    assert [(t["role"], t["content"]) for t in every] == [(t["role"], t["content"]) for t in chat["messages"]]
    assert every[0]["label"] == "System"
    assert expand.get_attribute("aria-expanded") == "true"
    # The streamed reply below the turns, labelled as the assistant's turn.
    reply_label = card.locator(".aigc-chat-reply-role")
    assert reply_label.is_visible() and reply_label.inner_text() == "Assistant · reply"
    text = card.locator(".aigc-run-text")
    assert text.get_attribute("aria-labelledby") == reply_label.get_attribute("id")
    below = lab.page.evaluate(
        """(id) => { const c = document.querySelector(`#aigc-lab-panel .aigc-run[data-run-id="${id}"]`);
             const last = [...c.querySelectorAll('.aigc-chat-turn')].pop().getBoundingClientRect();
             const label = c.querySelector('.aigc-chat-reply-role').getBoundingClientRect();
             const text = c.querySelector('.aigc-run-text').getBoundingClientRect();
             return last.bottom <= label.top + 1 && label.bottom <= text.top + 1; }""", run)
    assert below, "the reply is not below the turns"
    report = _axe(lab, f'#aigc-lab-panel .aigc-run[data-run-id="{run}"]')
    serious = [v for v in report["violations"] if v["impact"] in ("serious", "critical")]
    assert not serious, json.dumps(serious, indent=1)[:3000]
    # The picture: back to the last 6 turns and a note (what a long chat looks like).
    expand.click()
    _wait_turns(lab, run, 6)
    lab.next_frames()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    card.screenshot(path=str(CHAT_PNG))
    assert 1000 < CHAT_PNG.stat().st_size < 150_000, CHAT_PNG.stat().st_size


TRAIN = """
import json, tempfile
from pathlib import Path
import aigc_lab as al
_work = Path(tempfile.mkdtemp())
_rows = al.data.samples.catalogue_chats(80, seed=0, items=6, max_questions=2)
(_work / "chats.jsonl").write_text("\\n".join(json.dumps(r) for r in _rows) + "\\n", encoding="utf-8")
_splits = al.data.load(_work / "chats.jsonl").split(val=0.1, test=0.0, seed=0)
_corpus = [t["content"] for c in _splits.train.conversations() for t in c]
_small = al.models.build_starter("starter:gpt-tiny", _corpus, n_layer=1, n_embd=32)
_run = al.finetune(_small, _splits, method="full", train_on="assistant", max_steps=40, lr=1e-2, batch_size=8,
                   max_length=96, eval_every=10, eval_generate=4, max_target_length=6, save_final=False,
                   background=False, progress=False)
print(json.dumps({"run": _run.run, "status": _run.status, "evals": _run.evals}))
"""


def test_eval_metrics_chart(lab, starter):
    starter.wait_panel_follows()
    out = starter.execute(TRAIN, timeout=300).json_lines()[-1]
    run, evals = out["run"], out["evals"]
    assert out["status"] == "ok" and [e["step"] for e in evals] == [10, 20, 30, 40], out
    metrics = ["exact_match", "chrf", "bleu"]
    assert all(set(metrics) <= set(e) for e in evals), evals
    lab.wait_run(run, "ok")
    # One series per metric, every eval point drawn.
    attrs = wait_chart(lab, ".aigc-eval-chart", series=3, runs=[run], points=3 * len(evals))
    assert attrs.get("role") == "figure", attrs
    chart = lab.page.locator("#aigc-lab-panel .aigc-eval-chart")
    assert chart.is_visible()
    legend = chart.locator(".u-legend").inner_text()
    assert all(m in legend for m in metrics), legend
    summary = lab.page.evaluate(
        "() => { const c = document.querySelector('#aigc-lab-panel .aigc-eval-chart');"
        " return document.getElementById(c.getAttribute('aria-describedby')).textContent; }")
    assert summary.startswith("Eval metrics chart: "), summary
    for m in metrics:  # latest value and step, best (highest) value and its first step
        values = [e[m] for e in evals]
        found = re.search(rf"\b{m} ([\d.]+) at step (\d+) \(best ([\d.]+), highest, at step (\d+)\)", summary)
        assert found, (m, summary)
        assert float(found[1]) == pytest.approx(values[-1], rel=5e-3, abs=1e-9), (m, values, summary)
        assert int(found[2]) == 40
        assert float(found[3]) == pytest.approx(max(values), rel=5e-3, abs=1e-9), (m, values, summary)
        assert int(found[4]) == evals[values.index(max(values))]["step"], (m, values, summary)
    # The card's train line: the last eval's metrics.
    line = lab.run_el(run).locator(".aigc-train-summary").inner_text()
    for m in metrics:
        assert f"{m} " in line, line
    assert float(line.split("chrf ", 1)[1].split(" ", 1)[0]) == pytest.approx(evals[-1]["chrf"], rel=5e-3, abs=1e-9)
    lab.next_frames()
    screenshot_panel(lab, EVAL_PNG)
    assert EVAL_PNG.stat().st_size < 200_000, EVAL_PNG.stat().st_size
