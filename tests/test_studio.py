"""``Studio()`` driven from code: set traits and widget values, click buttons, assert what lands in the attributes."""

from __future__ import annotations

import html
import time

import pandas as pd
import pytest
from traitlets import TraitError

import aigc_lab as al
from aigc_lab.jupyter.studio import Studio

TEXTS = [f"The {w} function returns a new list of {n} items." for n in range(12) for w in ("map", "filter", "zip")]


def idle(studio: Studio, timeout: float = 60.0) -> Studio:
    assert studio.wait(timeout), f"a background action did not end within {timeout} s"
    return studio


@pytest.fixture(scope="module")
def handle():
    """``starter:gpt-tiny``, loaded once through the Model tab."""
    studio = Studio()
    studio.model_name = "starter:gpt-tiny"
    studio.model_tab.load_button.click()
    idle(studio)
    assert studio.errors == {}
    return studio.model


@pytest.fixture
def studio(handle):
    s = Studio()
    s.model = handle
    return s


def test_exported_and_tabs():
    assert al.Studio is Studio
    s = Studio()
    assert [s.widget.get_title(i) for i in range(8)] == ["Data", "Model", "Fine-tune", "Optimise", "Generate", "Chat",
                                                          "Compare", "Export"]


def test_traits_and_widgets_are_linked_both_ways():
    s = Studio()
    seen = []
    s.observe(lambda change: seen.append(change["new"]), "max_new_tokens")
    s.max_new_tokens = 32
    assert s.generate_tab.max_w.value == 32
    s.generate_tab.max_w.value = 7  # as if typed in the widget
    assert s.max_new_tokens == 7 and seen == [32, 7]
    s.model_name = "starter:llama-tiny"
    assert s.model_tab.name_w.value == "starter:llama-tiny"
    s.finetune_tab.method_w.value = "full"
    assert s.ft_method == "full"
    with pytest.raises(TraitError):
        s.quant_scheme = "int3"


def test_data_tab_loads_a_dataframe():
    s = Studio(data_val=0.25)
    df = pd.DataFrame({"body": TEXTS, "other": range(len(TEXTS))})
    s.data_text = "body"
    assert s.load_data(df)
    idle(s)
    assert s.errors == {}
    assert len(s.dataset) == len(TEXTS) and s.dataset.roles == {"text": "body"}
    assert s.splits is not None and len(s.splits.train) + len(s.splits.val) == len(TEXTS)
    assert f"{len(TEXTS)} rows" in s.data_tab.preview.value and f"{len(TEXTS)} rows" in s.data_tab.status


def test_data_tab_loads_a_csv_by_clicking(tmp_path):
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"question": ["1+1", "2+2", "3+3", "3+3"], "answer": ["2", "4", "6", "6"]}).to_csv(path, index=False)
    s = Studio(data_val=0.0)
    s.data_tab.source_w.value = str(path)  # typed into the Source box
    s.data_tab.clean_w.value = True
    s.data_input, s.data_target = "question", "answer"
    s.data_tab.load_button.click()
    idle(s)
    assert s.errors == {}
    assert s.dataset.kind == "pairs" and len(s.dataset) == 3  # the duplicate row was cleaned away
    assert s.splits is None
    assert "3 rows" in s.data_tab.preview.value and "1+1" in s.data_tab.preview.value


def test_data_tab_errors_are_inline(tmp_path):
    s = Studio(data_source=str(tmp_path / "missing.csv"))
    assert s.data_tab.load_button.click() is None  # no exception escapes the click
    assert "file not found" in s.data_tab.error and s.dataset is None
    assert s.data_tab.error_w.layout.display is None and "file not found" in s.data_tab.error_w.value
    s.data_source, s.data_val = "sample:dates", 1.5
    s.data_tab.load_button.click()
    assert "fractions" in s.data_tab.error
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    s.data_source, s.data_val, s.data_text = str(bad), 0.1, "nope"
    s.data_tab.load_button.click()
    idle(s)
    assert s.data_tab.error and "Traceback" not in s.data_tab.error and s.dataset is None  # a DataError, as-is


def test_model_tab_loads_a_starter(handle):
    assert handle.name == "starter:gpt-tiny" and handle.kind == "causal"


def test_bad_model_name_shows_an_inline_error():
    s = Studio(model_name="no-such-org/no-such-model-xyz")
    s.model_tab.load_button.click()
    idle(s)
    assert s.model is None
    assert "no-such-model-xyz" in s.model_tab.error and "starter:gpt-tiny" in s.model_tab.error  # says what to do
    assert "Traceback" not in s.model_tab.error_w.value and "failed" in s.model_tab.status
    assert not s.model_tab.busy and not s.model_tab.load_button.disabled
    s.model_name = "  "
    s.model_tab.load_button.click()
    assert "enter a model name" in s.model_tab.error


def test_generate_streams_tokens_inline(studio):
    values = []
    studio.generate_tab.output.observe(lambda change: values.append(change["new"]), "value")
    studio.prompt, studio.max_new_tokens, studio.temperature, studio.ignore_eos = "The map function", 24, 0.0, True
    studio.generate_tab.generate_button.click()
    idle(studio)
    stream = studio.stream
    assert studio.errors == {} and stream.status == "ok"
    assert stream.metrics.tokens == 24 and stream.metrics.ttft_ms > 0
    assert studio.generated_text == stream.text and stream.text
    shown = html.unescape(studio.generate_tab.output.value)
    assert "The map function" in shown and stream.text in shown
    assert len(values) >= 3  # the blank start, at least one partial update, the final text
    assert "TTFT" in studio.generate_tab.metrics_w.value and "tok/s" in studio.generate_tab.metrics_w.value


def test_stop_cancels_a_long_generation(studio):
    studio.prompt, studio.max_new_tokens, studio.ignore_eos = "Once", 5000, True
    studio.generate_tab.generate_button.click()
    deadline = time.monotonic() + 30
    while (studio.stream is None or not studio.stream.tokens) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert studio.generate_tab.busy and not studio.generate_tab.stop_button.disabled
    studio.generate_tab.generate_button.click()  # a second start while running: refused inline
    assert "already running" in studio.generate_tab.error
    studio.generate_tab.stop_button.click()
    idle(studio, 30)
    assert studio.stream.status == "cancelled"
    assert 0 < len(studio.stream.tokens) < 5000
    assert "cancelled" in studio.generate_tab.status and studio.generate_tab.stop_button.disabled


def test_generate_validates_inputs():
    s = Studio(prompt="hi")
    s.generate_tab.generate_button.click()
    assert "no model yet" in s.generate_tab.error
    s.prompt = ""
    s.generate_tab.generate_button.click()
    assert "prompt" in s.generate_tab.error
    assert s.stream is None


def test_optimise_int8_and_compare(studio):
    studio.quant_scheme = "int8"
    studio.optimise_tab.quantize_button.click()
    idle(studio)
    assert studio.errors == {}
    assert studio.quantized.quant == "int8" and studio.model.quant is None
    assert "int8" in studio.optimise_tab.result.value
    studio.compare_models = ("model", "quantized")
    studio.compare_prompts = "The map\nA list"
    studio.compare_max_new_tokens = 4
    studio.compare_tab.compare_button.click()
    idle(studio)
    assert studio.errors == {}
    table = studio.comparison
    assert len(table) == 2 and list(table["quant"]) == ["-", "int8"]
    assert "<table" in studio.compare_tab.table.value


def test_compare_needs_two_models(studio):
    studio.compare_tab.compare_button.click()
    assert "two models" in studio.compare_tab.error and studio.comparison is None


def test_finetune_tiny_run(studio, tmp_path):
    studio.load_data(TEXTS)
    idle(studio)
    studio.ft_method, studio.ft_max_steps, studio.ft_batch_size = "full", 2, 2
    studio.ft_output_dir = str(tmp_path / "run")
    studio.finetune_tab.start_button.click()
    idle(studio, 120)
    assert studio.errors == {}
    run = studio.run
    assert run.status == "ok" and run.step == 2
    assert studio.finetuned is not None and studio.finetuned is not studio.model
    assert studio.finetune_tab.progress.value == 2 and "ok" in studio.finetune_tab.status
    assert run.run in studio.finetune_tab.result.value


def test_finetune_stop_cancels(studio, tmp_path):
    studio.data_val = 0.0  # no end-of-run evaluation: the test is about Stop
    studio.load_data(TEXTS * 4)
    idle(studio)
    studio.ft_method, studio.ft_max_steps, studio.ft_batch_size = "full", 500, 2
    studio.ft_output_dir = str(tmp_path / "run")
    studio.finetune()
    deadline = time.monotonic() + 60
    while (studio.run is None or studio.run.status != "running") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert studio.finetune_tab.busy and not studio.finetune_tab.stop_button.disabled
    studio.finetune_tab.stop_button.click()
    idle(studio, 60)
    assert studio.run.status == "cancelled" and studio.run.step < 500
    assert studio.finetuned is None and "cancelled" in studio.finetune_tab.status


def test_finetune_distill_driven_from_code(studio, tmp_path):
    studio.load_data(TEXTS)
    idle(studio)
    studio.ft_method, studio.ft_max_steps, studio.ft_batch_size = "full", 2, 2
    studio.ft_output_dir = str(tmp_path / "teacher")
    studio.finetune_tab.start_button.click()
    idle(studio, 120)
    teacher = studio.finetuned
    assert studio.errors == {} and teacher is not None
    assert studio.finetune_tab.teacher_row.layout.display == "none"  # the picker shows only for distill
    assert "finetuned" in studio.finetune_tab.teacher_w.options  # a loaded model is offered as a teacher
    studio.finetune_tab.method_w.value = "distill"  # as if picked in the dropdown
    assert studio.ft_method == "distill" and studio.finetune_tab.teacher_row.layout.display is None
    studio.ft_teacher = "finetuned"
    assert studio.finetune_tab.teacher_w.value == "finetuned"
    studio.ft_output_dir = str(tmp_path / "student")
    studio.finetune_tab.start_button.click()
    idle(studio, 120)
    assert studio.errors == {}
    run = studio.run
    assert run.config.method == "distill" and run.status == "ok" and run.step == 2
    assert studio.finetuned is not teacher and studio.finetuned.name == "starter:gpt-tiny+distill"
    assert "distill" in studio.finetune_tab.result.value and "distill fine-tuning ok" in studio.finetune_tab.status
    assert "(distill): ok" in studio.summary_text()


def test_distill_teacher_is_validated_inline(studio, tmp_path):
    from aigc_lab.models.starter import build_starter

    studio.load_data(TEXTS)
    idle(studio)
    studio.ft_method, studio.ft_max_steps, studio.ft_batch_size = "distill", 2, 2
    studio.ft_output_dir = str(tmp_path / "run")
    studio.finetune_tab.start_button.click()
    assert "needs a teacher" in studio.finetune_tab.error
    studio.ft_teacher = "quantized"
    studio.finetune_tab.start_button.click()
    assert "no quantized model yet" in studio.finetune_tab.error
    studio.ft_teacher = "model"
    studio.finetune_tab.start_button.click()
    assert "cannot be the model being trained" in studio.finetune_tab.error
    other = build_starter("starter:gpt-tiny", corpus=TEXTS)  # its own, smaller vocabulary
    studio.quantized = other  # a loaded teacher: checked before anything starts
    studio.ft_teacher = "quantized"
    studio.finetune_tab.start_button.click()
    assert "tokenizers differ" in studio.finetune_tab.error and not studio.finetune_tab.busy
    studio.ft_teacher = str(other.save(tmp_path / "other"))  # a folder: loaded, then checked, in the background
    studio.finetune_tab.start_button.click()
    idle(studio, 60)
    assert "tokenizers differ" in studio.finetune_tab.error and "Traceback" not in studio.finetune_tab.error_w.value
    assert studio.run is None and studio.finetuned is None and "failed" in studio.finetune_tab.status


def test_finetune_needs_data(studio):
    studio.finetune_tab.start_button.click()
    assert "no data yet" in studio.finetune_tab.error and studio.run is None


def test_static_summary_has_model_and_last_generation(studio):
    assert "nothing loaded" in Studio().summary_text()
    studio.prompt, studio.max_new_tokens, studio.temperature = "Hello <b>", 8, 0.0
    studio.generate()
    idle(studio)
    bundle = studio._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    model_id = bundle["application/vnd.jupyter.widget-view+json"]["model_id"]
    assert model_id == studio.view.model_id
    assert bundle["application/vnd.aigc-lab.studio+json"] == {"version": 1, "model_id": model_id}
    page, text = bundle["text/html"], bundle["text/plain"]
    assert "starter:gpt-tiny" in page and "starter:gpt-tiny" in text
    assert html.escape(studio.stream.text) in page and studio.stream.text in text
    assert "Hello &lt;b&gt;" in page and "TTFT" in page


def test_catalog_button_fills_the_model_choices():
    s = Studio()
    s.model_tab.catalog_button.click()
    idle(s)
    assert s.errors == {}
    assert "starter:gpt-tiny" in set(s.catalog["name"]) and "starter:gpt-tiny" in s.model_tab.name_w.options
    assert "<table" in s.model_tab.catalog_w.value


def test_displayed_summary_is_refreshed_after_an_action():
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.display import display
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    s = Studio()
    with capture_output() as cap:
        display(s)
        s.load_data(TEXTS)
        idle(s)
    first, last = cap.outputs[0].data, cap.outputs[-1].data
    assert "application/vnd.jupyter.widget-view+json" in first and "nothing loaded" in first["text/plain"]
    assert f"{len(TEXTS)} rows" in last["text/plain"] and f"{len(TEXTS)} rows" in last["text/html"]


def test_chat_tab_streams_replies_and_keeps_the_conversation(studio):
    values = []
    studio.chat_tab.transcript.observe(lambda change: values.append(change["new"]), "value")
    studio.chat_system, studio.chat_max_new_tokens = "Be brief.", 12
    studio.chat_message = "What is a list?"
    studio.chat_tab.send_button.click()
    idle(studio)
    assert studio.errors == {} and studio.chat_message == ""  # sent: the box is cleared
    first = studio.conversation
    roles = [t["role"] for t in first.messages]
    assert roles == ["system", "user", "assistant"], first.messages
    reply = first.messages[-1]["content"]
    shown = html.unescape(studio.chat_tab.transcript.value)
    assert "What is a list?" in shown and reply in shown and "▍" not in shown
    assert any("▍" in html.unescape(v) for v in values)  # the reply was shown while it streamed
    assert "TTFT" in studio.chat_tab.metrics_w.value
    studio.chat_message = "And a tuple?"
    studio.chat()
    idle(studio)
    assert studio.conversation is first and len(first.messages) == 5  # the same conversation, one turn more
    assert "And a tuple?" in studio.summary_text() and "Chat" in studio.summary_html()
    studio.chat_system = "Answer in French."  # another system message: the next Send starts over
    studio.chat_message = "Bonjour"
    studio.chat()
    idle(studio)
    assert studio.conversation is not first and [t["role"] for t in studio.conversation.messages] == [
        "system", "user", "assistant"]
    studio.chat_tab.new_button.click()
    assert studio.conversation is None and "no messages yet" in studio.chat_tab.transcript.value


def test_chat_tab_errors_are_inline(studio):
    studio.chat_message = ""
    studio.chat()
    assert "write a message first" in studio.chat_tab.error
    s = Studio(chat_message="hi")
    s.chat()
    assert "no model yet" in s.chat_tab.error
    gpt2 = al.models.ModelHandle(model=studio.model.model, tokenizer=__import__("copy").deepcopy(
        studio.model.tokenizer), name="no-template", kind="causal")
    gpt2.tokenizer.chat_template = None
    s.model, s.chat_message = gpt2, "hi"
    s.chat()
    idle(s)
    assert "chat template" in s.chat_tab.error  # refused with what to do, not a traceback
    s.chat_template, s.chat_message = "plain", "hi"
    s.chat()
    idle(s)
    assert s.chat_tab.error == "" and s.conversation.messages[-1]["role"] == "assistant"


def test_chat_tab_stop_cancels_a_long_reply(studio):
    studio.chat_max_new_tokens, studio.chat_message = 100_000, "Tell me everything."
    studio.chat_tab.send_button.click()
    deadline = time.monotonic() + 30
    while "generating" not in studio.chat_tab.status and time.monotonic() < deadline:
        time.sleep(0.02)
    studio.chat_tab.stop_button.click()
    idle(studio, 30)
    assert "cancelled" in studio.chat_tab.status and studio.chat_tab.stop_button.disabled
