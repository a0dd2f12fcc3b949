"""The in-place KV cache: the same keys, values and tokens as transformers' DynamicCache, without re-copying."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicLayer

import aigc_lab as al
import aigc_lab.infer.forward_step as forward_step
from aigc_lab.infer.kv_cache import reserved_cache


def test_reserved_layer_matches_dynamic_layer_and_regrows_when_full(gpt_tiny):
    cache = reserved_cache(gpt_tiny.model, capacity=6)
    layer, ref = cache.layers[0], DynamicLayer()
    torch.manual_seed(0)
    ptrs = set()
    for n in (4, 1, 1, 1, 3, 1):  # the 4th update overflows the 6 reserved positions
        k, v = torch.randn(1, 2, n, 8), torch.randn(1, 2, n, 8)
        got, want = layer.update(k, v), ref.update(k, v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        ptrs.add(layer.keys.data_ptr())
    assert layer.get_seq_length() == 11 and len(ptrs) == 2  # one buffer until full, then one more
    layer.crop(-2)  # cropping leaves a view of the buffer: the next update writes after it
    ref.crop(-2)
    k, v = torch.randn(1, 2, 1, 8), torch.randn(1, 2, 1, 8)
    assert torch.equal(layer.update(k, v)[0], ref.update(k, v)[0])
    layer.keys, layer.values = layer.keys.clone(), layer.values.clone()  # replaced (e.g. reordered)
    ref.keys, ref.values = ref.keys.clone(), ref.values.clone()
    assert torch.equal(layer.update(k, v)[1], ref.update(k, v)[1])


def test_models_without_transformers_caches_get_none(llama_tiny):
    assert reserved_cache(torch.nn.Linear(2, 2), 8) is None
    assert reserved_cache(llama_tiny.model, 8) is not None


@pytest.mark.parametrize("fixture", ["gpt_tiny", "llama_tiny"])
def test_generation_gives_the_same_tokens_as_with_dynamic_cache(request, fixture, monkeypatch):
    handle = request.getfixturevalue(fixture)
    prompts = ["Once upon a time", ["A dog", "The quick brown fox jumps"]]
    kw = dict(max_new_tokens=40, ignore_eos=True, cpu_kernel=False)
    reserved = [al.generate(handle, p, **kw) for p in prompts]
    reserved_ids = [reserved[0].wait().ids, [s.wait().ids for s in reserved[1]]]
    monkeypatch.setattr(forward_step, "reserved_cache", lambda *a: None)  # transformers' DynamicCache
    dynamic = [al.generate(handle, prompts[0], stepper="forward", **kw), al.generate(handle, prompts[1], **kw)]
    assert dynamic[0].plan.stepper.name == "forward" and dynamic[1][0].plan.stepper.name == "batch"
    assert reserved_ids == [dynamic[0].wait().ids, [s.wait().ids for s in dynamic[1]]]
