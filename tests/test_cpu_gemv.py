"""The opt-in OpenMP matrix-vector kernel (``al.infer.fast_cpu``): same tokens, original untouched, clear errors.

Building the kernel needs a C++ compiler (g++, which this project's machines have). The first test
builds it (about 30 s on 2 cores, then cached under ~/.cache/aigc_lab); without a compiler these tests
FAIL with the KernelBuildError saying so, they do not skip.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

import aigc_lab as al
from aigc_lab.errors import AigcLabError
from aigc_lab.infer import cpu_gemv


def test_kernel_matches_torch_on_matrix_vector_products():
    gemv = cpu_gemv.kernels().gemv
    torch.manual_seed(0)
    for n, k in ((1, 1), (7, 13), (2304, 768), (50, 4096)):
        w, x, b = torch.randn(n, k), torch.randn(k), torch.randn(n)
        torch.testing.assert_close(gemv(w, x, None), w @ x, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(gemv(w, x, b), w @ x + b, rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="contiguous fp32"):
        gemv(torch.randn(8, 4).t(), torch.randn(8), None)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_fast_cpu_decodes_the_same_tokens_and_leaves_the_original_alone(arch, llama_tiny):
    tok = llama_tiny.tokenizer
    if arch == "gpt2":  # Conv1D layers: converted to Linear in the copy only
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=len(tok), n_positions=256,
                                           eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)).eval()
        eager = al.models.ModelHandle(model, tok, "tiny-gpt2", "causal")
    else:
        eager = llama_tiny
    before = {k: v.clone() for k, v in eager.model.state_dict().items()}
    fast = al.infer.fast_cpu(eager)
    assert fast is not eager and fast.compile_s > 0 and al.infer.fast_cpu(fast) is fast
    for prompt in ("Once upon a time", "The quick brown fox jumps over the lazy dog again and again"):
        want = al.generate(eager, prompt, max_new_tokens=16, ignore_eos=True).wait()
        got = al.generate(fast, prompt, max_new_tokens=16, ignore_eos=True).wait()
        assert got.ids == want.ids and got.text == want.text
    # batches (several rows) take the eager path and still agree
    rows = al.generate(fast, ["Once upon a time", "A dog"], max_new_tokens=8, ignore_eos=True)
    want = al.generate(eager, ["Once upon a time", "A dog"], max_new_tokens=8, ignore_eos=True)
    assert [s.wait().ids for s in rows] == [s.wait().ids for s in want]
    # the original: same weights, no patched forwards, GPT-2 keeps its Conv1D layers
    assert all(torch.equal(v, before[k]) for k, v in eager.model.state_dict().items())
    assert not any("forward" in vars(m) for m in eager.model.modules())
    if arch == "gpt2":
        assert any(isinstance(m, Conv1D) for m in eager.model.modules())
        assert not any(isinstance(m, Conv1D) for m in fast.model.modules())
    # with gradients on, layers run the eager (differentiable) path
    lin = next(m for m in fast.model.modules() if type(m) is torch.nn.Linear)
    x = torch.randn(1, lin.in_features)
    y = lin(x)
    assert y.requires_grad and torch.allclose(y, torch.nn.functional.linear(x, lin.weight, lin.bias))
    with torch.inference_mode():
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias), rtol=1e-4, atol=1e-5)


def test_fast_cpu_refuses_what_it_cannot_speed_up(llama_tiny):
    bf16 = al.quantize(llama_tiny, "bf16")
    with pytest.raises(AigcLabError, match="fp32 models on the CPU"):
        al.infer.fast_cpu(bf16)


def test_no_compiler_gives_one_clear_error(monkeypatch, tmp_path):
    import torch.utils.cpp_extension as ext

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension: g++: command not found")

    monkeypatch.setattr(ext, "load_inline", no_compiler)
    monkeypatch.setenv("AIGC_LAB_CACHE", str(tmp_path))
    cpu_gemv.kernels.cache_clear()
    try:
        with pytest.raises(cpu_gemv.KernelBuildError, match="C\\+\\+ compiler.*g\\+\\+: command not found|"
                                                            "g\\+\\+: command not found.*C\\+\\+ compiler"):
            cpu_gemv.kernels()
    finally:
        cpu_gemv.kernels.cache_clear()  # the next caller builds (or loads) the real kernel again
