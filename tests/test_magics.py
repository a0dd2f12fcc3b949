"""``%aigc`` through a real IPython shell: each subcommand, streaming output, variables, bad arguments."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

import aigc_lab as al


@pytest.fixture(scope="module")
def shell():
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "aigc_lab")
    yield sh
    InteractiveShell.clear_instance()


def run(shell, code, capsys):
    result = shell.run_cell(code)
    out = capsys.readouterr()
    return result, out.out + out.err


def test_help_lists_every_subcommand(shell, capsys):
    result, out = run(shell, "%aigc --help", capsys)
    assert result.success
    for cmd in ("model", "data", "finetune", "quantize", "generate", "compare", "runs", "stop"):
        assert cmd in out
    _, out = run(shell, "%aigc generate --help", capsys)
    assert "--max-new-tokens" in out and "--temperature" in out


@pytest.mark.parametrize("line, expected", [
    ("%aigc", "give a command"),
    ("%aigc teleport", "invalid choice"),
    ("%aigc generate --max-new-tokens lots hi", "invalid int value"),
    ("%aigc quantize int3", "invalid choice"),
    ("%aigc generate --model nothing_here hi", "no variable named 'nothing_here'"),
    ("%aigc model starter:gpt-gigantic", "unknown starter model"),
    ("%aigc stop no-such-run", "is not running"),
])
def test_bad_arguments_give_a_short_usage_error_not_a_traceback(shell, capsys, line, expected):
    result, out = run(shell, line, capsys)
    assert expected in out
    assert "Traceback" not in out


def test_the_loop_through_magics(shell, capsys, tmp_path):
    result, out = run(shell, "%aigc model starter:gpt-tiny -o m", capsys)
    assert result.success and "starter:gpt-tiny" in out
    assert isinstance(shell.user_ns["m"], al.models.ModelHandle)

    shell.user_ns["n_new"] = 6
    result, out = run(shell, "%aigc generate -n {n_new} --seed 1 -t 0.8 -o s The interpreter", capsys)
    assert result.success
    stream = shell.user_ns["s"]
    assert stream.prompt == "The interpreter" and len(stream.ids) == 6 and stream.text in out
    assert "TTFT" in out and "tok/s" in out

    result, out = run(shell, "%%aigc generate -n 4 --logprobs 3 -o cell_stream\nOnce upon a time\n", capsys)
    cell_stream = shell.user_ns["cell_stream"]
    assert result.success and cell_stream.prompt == "Once upon a time"
    assert all(t.logprob is not None and len(t.top) == 3 for t in cell_stream.tokens if t.id is not None)

    result, out = run(shell, "%aigc quantize int8 --model m -o q", capsys)
    assert result.success and shell.user_ns["q"].quant == "int8"

    result, _ = run(shell, "table = %aigc compare m q --prompt 'A class' -n 4", capsys)
    assert result.success and list(shell.user_ns["table"]["quant"]) == ["-", "int8"]

    result, _ = run(shell, "%aigc runs -o history", capsys)
    history = shell.user_ns["history"]
    assert result.success and {"generate", "bench"} <= set(history["kind"])
    assert shell.user_ns["s"].run in set(history["run"])

    csv = tmp_path / "reviews.csv"
    csv.write_text("text\n" + "\n".join(f"review number {i} is fine" for i in range(20)) + "\n", encoding="utf-8")
    result, out = run(shell, f"%aigc data {csv} --text text --split 0.2 -o splits", capsys)
    assert result.success and "20 rows" in out
    assert len(shell.user_ns["splits"].val) > 0


def test_stop_cancels_a_background_run(shell, capsys):
    run(shell, "%aigc model starter:gpt-tiny -o m2", capsys)
    stream = al.generate(shell.user_ns["m2"], "x", max_new_tokens=100_000, background=True)
    result, out = run(shell, f"%aigc stop {stream.run}", capsys)
    assert result.success and f"cancelling {stream.run}" in out
    assert stream.wait(timeout=10).status == "cancelled"
