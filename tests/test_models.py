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
