"""``device="auto"`` is decided in one place (models/devices.py) and is the default of load(), catalog(), the
magics and Studio; the catalog judges fit on the device and dtype load() would use. The CUDA branch runs here
with ``torch.cuda.is_available`` monkeypatched (no GPU on these machines)."""

from __future__ import annotations

import pytest
import torch

import aigc_lab as al
from aigc_lab.errors import DeviceError, UnknownDtypeError
from aigc_lab.models import devices, memory


def test_auto_is_cpu_without_a_gpu_and_cuda_with_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device() == devices.resolve_device(None) == "cpu"
    assert devices.resolve_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match="torch.cuda.is_available.. is False.*device='auto'"):
        devices.resolve_device("cuda")
    with pytest.raises(DeviceError, match="not a device"):
        devices.resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == "cuda" and devices.resolve_device("cuda:1") == "cuda:1"


def test_load_dtype_is_the_one_asked_for_else_the_saved_one():
    from transformers import GPT2Config

    saved_bf16 = GPT2Config(dtype="bfloat16")
    assert devices.load_dtype(saved_bf16) == "bfloat16" and devices.load_dtype(saved_bf16, "fp32") == "float32"
    assert devices.load_dtype(GPT2Config()) == "float32"
    with pytest.raises(UnknownDtypeError, match="unknown dtype 'int3'") as err:
        devices.dtype_name("int3")
    assert isinstance(err.value, ValueError)


def test_load_defaults_to_auto_and_checks_memory_on_that_device(monkeypatch):
    import inspect

    assert inspect.signature(al.models.load).parameters["device"].default == "auto"
    assert inspect.signature(al.models.catalog).parameters["device"].default == "auto"
    seen = []
    real = memory.available_memory
    monkeypatch.setattr(memory, "available_memory", lambda device=None: seen.append(device) or real("cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    handle = al.models.load("starter:gpt-tiny")
    assert handle.device == "cpu" and seen == ["cpu"]
    with pytest.raises(DeviceError):
        al.models.load("starter:gpt-tiny", device="cuda")


def test_catalog_judges_fit_on_the_device_and_dtype_load_would_use(monkeypatch):
    """With a (stated) GPU the catalog asks the GPU's free memory, and each model's row is judged in the dtype
    load() would give it: its saved dtype (Qwen2.5 is saved in bf16, the starters in fp32) unless one is asked."""
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(memory, "available_memory", lambda device=None: asked.append(device) or 10**12)
    df = al.models.catalog(["starter:gpt-tiny", "Qwen/Qwen2.5-0.5B"], include_defaults=False).set_index("name")
    assert asked == ["cuda"] and df.attrs["device"] == "cuda" and df.attrs["fits_dtype"] == "saved"
    assert df.loc["starter:gpt-tiny", "dtype"] == "float32" and df.loc["Qwen/Qwen2.5-0.5B", "dtype"] == "bfloat16"
    qwen = df.loc["Qwen/Qwen2.5-0.5B"]
    free = int((qwen["load_bf16_mb"] + qwen["load_fp32_mb"]) / 2 * memory.MB)  # bf16 fits, fp32 would not
    monkeypatch.setattr(memory, "available_memory", lambda device=None: free)
    df = al.models.catalog(["Qwen/Qwen2.5-0.5B"], include_defaults=False).set_index("name")
    assert bool(df.loc["Qwen/Qwen2.5-0.5B", "fits"])
    df = al.models.catalog(["Qwen/Qwen2.5-0.5B"], include_defaults=False, dtype="float32").set_index("name")
    assert not bool(df.loc["Qwen/Qwen2.5-0.5B", "fits"]) and df.loc["Qwen/Qwen2.5-0.5B", "dtype"] == "float32"


def test_magics_and_studio_default_to_auto():
    from aigc_lab.jupyter.magics import build_parser
    from aigc_lab.jupyter.studio import Studio

    assert build_parser().parse_args(["model", "starter:gpt-tiny"]).device == "auto"
    studio = Studio()
    assert studio.model_device == "auto" and studio.model_tab._validate()[2] == "auto"
