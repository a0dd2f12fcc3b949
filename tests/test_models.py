"""Model resolution and loading: starter models, local folders, hub ids offline, unsafe weights."""

from __future__ import annotations

import pytest

import aigc_lab as al
from aigc_lab.errors import AigcLabError, ModelLoadError, ModelNotFoundError


def test_starter_handle_describes_itself(gpt_tiny):
    info = gpt_tiny.info()
    assert info.name == "starter:gpt-tiny" and info.dtype == "float32" and info.device == "cpu"
    assert 3e6 < info.params < 8e6, info.params  # "tiny" is about 5M parameters
    assert gpt_tiny.kind == "causal"


def test_unknown_starter_name_lists_the_options():
    with pytest.raises(ModelNotFoundError, match="starter:gpt-tiny"):
        al.models.load("starter:gpt-gigantic")


def test_save_and_load_back_through_the_hub_path(tmp_path, llama_tiny):
    folder = llama_tiny.save(tmp_path / "llama")
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    assert not list(tmp_path.glob(".llama.*")), "a temp folder was left behind"
    back = al.models.load(str(folder))
    a = al.generate(llama_tiny, "Once upon", max_new_tokens=12).tokens
    b = al.generate(back, "Once upon", max_new_tokens=12).tokens
    assert [t.id for t in a] == [t.id for t in b]


def test_folder_without_config_says_what_to_do(tmp_path):
    with pytest.raises(ModelNotFoundError, match="save_pretrained"):
        al.models.load(str(tmp_path))


def test_pickled_weights_are_refused(tmp_path, llama_tiny):
    import torch

    llama_tiny.save(tmp_path / "m")
    folder = tmp_path / "m"
    (folder / "model.safetensors").unlink()
    torch.save(llama_tiny.model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors"):
        al.models.load(str(folder))


def test_hub_id_with_no_network_names_an_offline_alternative(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="starter:gpt-tiny") as info:
        al.models.load("some-org/some-model-that-is-not-cached")
    assert isinstance(info.value, AigcLabError)


def test_pickled_weights_load_with_explicit_opt_in_and_a_warning(tmp_path, llama_tiny):
    import torch

    folder = llama_tiny.save(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    torch.save(llama_tiny.model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="allow_pickle=True") as info:
        al.models.load(str(folder))
    assert "pytorch_model.bin" in str(info.value)
    with pytest.warns(UserWarning, match="pickled"):
        back = al.models.load(str(folder), allow_pickle=True)
    ids = llama_tiny.tokenizer("Once upon a time", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.equal(back.model(input_ids=ids).logits, llama_tiny.model(input_ids=ids).logits)


def test_hub_id_without_network_fails_fast_with_directions(monkeypatch, tmp_path):
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr("aigc_lab.models.loader.hub_reachable", lambda timeout=3.0: False)
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        al.models.load("t5-small")
    elapsed = time.perf_counter() - t0
    message = str(info.value)
    assert elapsed < 5, elapsed
    assert "hf download t5-small" in message and "no network" in message
    assert "starter:t5-small" in message  # a seq2seq model gets a seq2seq alternative


def test_hub_probe_is_bounded_in_time(monkeypatch):
    import time

    from aigc_lab.models.loader import hub_reachable

    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # a name that never resolves
    t0 = time.perf_counter()
    assert hub_reachable(timeout=0.5) is False
    assert time.perf_counter() - t0 < 2


def test_real_hub_lookup_in_this_offline_environment_is_fast(monkeypatch, tmp_path):
    """No mocks: the environment has no route to the hub; the error must come within 5 s."""
    import time

    from aigc_lab.models.loader import hub_reachable

    if hub_reachable():
        pytest.skip("the hub is reachable here; this test is about machines without network")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="starter:gpt-small"):
        al.models.load("distilgpt2")
    assert time.perf_counter() - t0 < 5


def test_remote_code_is_never_trusted_implicitly(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "my-own-arch",
                                                      "auto_map": {"AutoConfig": "code.MyConfig"}}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        al.models.load(str(tmp_path))
