"""The OpenMP matrix-vector kernel: exact products, same greedy tokens, used by default once built, clear errors.

Building the kernel needs a C++ compiler (g++, which this project's machines have). The first test
builds it (about 30 s on 2 cores, then cached under ~/.cache/aigc_lab; ``make`` builds it first);
without a compiler these tests FAIL with the KernelBuildError saying so, they do not skip.
"""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

import aigc_lab as al
from aigc_lab.errors import AigcLabError
from aigc_lab.infer import kernel_build, kernel_layers


def test_kernel_matches_torch_on_matrix_vector_products():
    gemv = kernel_build.kernels().gemv
    torch.manual_seed(0)
    for n, k in ((1, 1), (7, 13), (2304, 768), (50, 4096)):
        w, x, b = torch.randn(n, k), torch.randn(k), torch.randn(n)
        torch.testing.assert_close(gemv(w, x, None), w @ x, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(gemv(w, x, b), w @ x + b, rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="contiguous fp32"):
        gemv(torch.randn(8, 4).t(), torch.randn(8), None)


def test_transposed_kernel_matches_torch_for_conv1d_layouts():
    """``gemv_t`` computes x @ W (+ b) for W stored (in, out), GPT-2's Conv1D, without a transposed copy."""
    gemv_t = kernel_build.kernels().gemv_t
    torch.manual_seed(0)
    for k, n in ((1, 1), (5, 3), (13, 17), (768, 2304), (3072, 768), (7, 1000)):
        w, x, b = torch.randn(k, n), torch.randn(k), torch.randn(n)
        torch.testing.assert_close(gemv_t(w, x, None), x @ w, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(gemv_t(w, x, b), x @ w + b, rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="contiguous fp32"):
        gemv_t(torch.randn(4, 8).t(), torch.randn(8), None)



def test_several_rows_in_one_pass_match_the_one_row_products():
    """``Product.rows`` (speculative verification's products: up to 8 rows per pass over the weights, more in
    even groups) gives each row what the one-row product gives it: fp32 Linear and Conv1D layouts to rounding,
    int8 exactly (the same integers and scales). Shapes leave every tail: K and N off the 16 / 64 blocks."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    k = kernel_build.kernels()
    torch.manual_seed(0)
    for n_in, n_out in ((5, 3), (37, 53), (64, 48), (100, 1000), (768, 2304)):
        w, b = torch.randn(n_out, n_in), torch.randn(n_out)
        q = DynamicInt8Linear(n_in, n_out, dtype=torch.qint8)
        q.set_weight_bias(torch.quantize_per_channel(w, w.abs().amax(1) / 127, torch.zeros(n_out, dtype=torch.long),
                                                     0, torch.qint8), b)
        products = {"linear": k.Product(w, b), "conv1d": k.Product(w.t().contiguous(), b, transposed=True),
                    "int8": kernel_layers.product_of(q, k)}
        for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 17):
            x = torch.randn(n, n_in) * 3
            for name, product in products.items():
                got = product.rows(x)
                assert got.shape == (n, n_out)
                one_by_one = torch.stack([product(row) for row in x])
                if name == "int8":
                    assert torch.equal(got, one_by_one), (name, n_in, n_out, n)
                else:
                    torch.testing.assert_close(got, x @ w.t() + b, rtol=1e-4, atol=1e-3, msg=f"{name} {n}")
                    torch.testing.assert_close(got, one_by_one, rtol=1e-4, atol=1e-3, msg=f"{name} {n}")


@pytest.mark.parametrize("scheme", ["per_tensor", "per_channel"])
def test_int8_products_match_torchs_dynamic_int8_linear(scheme):
    """The int8 product (VNNI, AVX2 or plain loop, whichever this CPU built) computes what torch's dynamic
    int8 Linear does, for widths that leave every tail: under 32, between the vector blocks, long rows."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    torch.manual_seed(0)
    for n_out, n_in in ((3, 5), (17, 31), (33, 64), (40, 100), (1536, 512), (64, 777), (512, 2048)):
        linear = torch.nn.Linear(n_in, n_out)
        if scheme == "per_tensor":
            q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, torch.qint8)[0]
        else:
            q = DynamicInt8Linear(n_in, n_out, dtype=torch.qint8)
            scales = linear.weight.detach().abs().amax(1) / 127
            w = torch.quantize_per_channel(linear.weight.detach(), scales, torch.zeros(n_out, dtype=torch.long),
                                           0, torch.qint8)
            q.set_weight_bias(w, linear.bias.detach())
        product = kernel_layers.product_of(q, kernel_build.kernels())
        assert product is not None
        for _ in range(3):
            x = torch.randn(n_in) * 3
            torch.testing.assert_close(product(x), q(x.view(1, -1)).view(-1), rtol=1e-4, atol=1e-4)

@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_fast_cpu_decodes_the_same_tokens_and_leaves_the_original_alone(arch, llama_tiny):
    tok = llama_tiny.tokenizer
    if arch == "gpt2":  # Conv1D layers: the transposed kernel reads their weights as stored
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
        want = al.generate(eager, prompt, max_new_tokens=16, ignore_eos=True, cpu_kernel=False).wait()
        got = al.generate(fast, prompt, max_new_tokens=16, ignore_eos=True).wait()
        assert got.ids == want.ids and got.text == want.text
    # batches (several rows) take the eager path and still agree
    rows = al.generate(fast, ["Once upon a time", "A dog"], max_new_tokens=8, ignore_eos=True)
    want = al.generate(eager, ["Once upon a time", "A dog"], max_new_tokens=8, ignore_eos=True)
    assert [s.wait().ids for s in rows] == [s.wait().ids for s in want]
    # the original: same weights, no patched forwards; the copy shares every weight (no second copy)
    assert all(torch.equal(v, before[k]) for k, v in eager.model.state_dict().items())
    assert not any("forward" in vars(m) for m in eager.model.modules())
    assert not any("forward" in vars(m) for m in fast.model.modules())  # module swaps, no patched forwards
    assert ({p.data_ptr() for p in fast.model.parameters()} == {p.data_ptr() for p in eager.model.parameters()})
    kernel_layers_ = [m for m in fast.model.modules() if kernel_layers.kernel_product(m) is not None]
    assert kernel_layers_ and not any(isinstance(m, Conv1D | torch.nn.Linear) and kernel_layers.kernel_product(m)
                                      for m in fast.model.modules())
    if arch == "gpt2":
        assert any(isinstance(m.layer, Conv1D) for m in kernel_layers_)
    # with gradients on, layers run the eager (differentiable) path
    lin = next(m for m in kernel_layers_ if type(m.layer) is torch.nn.Linear)
    w, b = lin.layer.weight, lin.layer.bias
    x = torch.randn(1, lin.n_in)
    y = lin(x)
    assert y.requires_grad and torch.allclose(y, torch.nn.functional.linear(x, w, b))
    with torch.inference_mode():
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, w, b), rtol=1e-4, atol=1e-5)


def test_fast_cpu_refuses_what_it_cannot_speed_up(llama_tiny):
    bf16 = al.quantize(llama_tiny, "bf16")
    with pytest.raises(AigcLabError, match="fp32 and int8 models on the CPU"):
        al.infer.fast_cpu(bf16)
    int8 = al.quantize(llama_tiny, "int8")  # dynamic int8 runs on the kernel too, and stays int8
    fast = al.infer.fast_cpu(int8)
    assert fast.quant == "int8" and fast.model is not int8.model
    want = al.generate(int8, "Once upon a time", max_new_tokens=12, ignore_eos=True, cpu_kernel=False).wait()
    assert al.generate(fast, "Once upon a time", max_new_tokens=12, ignore_eos=True).wait().ids == want.ids


def test_no_compiler_gives_one_clear_error(monkeypatch, tmp_path):
    import torch.utils.cpp_extension as ext

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension: g++: command not found")

    monkeypatch.setattr(ext, "load_inline", no_compiler)
    monkeypatch.setenv("AIGC_LAB_CACHE", str(tmp_path))
    kernel_build.kernels.cache_clear()
    try:
        with pytest.raises(kernel_build.KernelBuildError, match="C\\+\\+ compiler.*g\\+\\+: command not found|"
                                                            "g\\+\\+: command not found.*C\\+\\+ compiler"):
            kernel_build.kernels()
    finally:
        kernel_build.kernels.cache_clear()  # the next caller builds (or loads) the real kernel again


def test_generate_uses_the_built_kernel_by_default_and_says_so(gpt_tiny):
    """Once built, single-prompt fp32 decoding runs on the kernel: same tokens, recorded in the run's config;
    ``cpu_kernel=False``, batches and non-fp32 models take torch's path."""
    from aigc_lab.bus import EventBus, Recorder

    kernel_build.kernels()  # built (make does this)
    assert kernel_build.built()
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    auto = al.generate(gpt_tiny, "Once upon a time", max_new_tokens=20, ignore_eos=True, event_bus=bus).wait()
    torch_path = al.generate(gpt_tiny, "Once upon a time", max_new_tokens=20, ignore_eos=True, cpu_kernel=False,
                             event_bus=bus).wait()
    assert auto.ids == torch_path.ids
    assert rec[auto.run].start.config["cpu_kernel"] is True
    assert rec[torch_path.run].start.config["cpu_kernel"] is False
    batch = al.generate(gpt_tiny, ["a", "b"], max_new_tokens=2, event_bus=bus)
    assert rec[batch[0].wait().run].start.config["cpu_kernel"] is False
    bf16 = al.quantize(gpt_tiny, "bf16")  # 16-bit weights: an fp32 copy made once, on the kernel, and said so
    config = rec[al.generate(bf16, "a", max_new_tokens=2, event_bus=bus).wait().run].start.config
    assert config["cpu_kernel"] is True and config["layers"] == "kernel-upcast"
    assert "bfloat16 weights converted once to fp32" in config["layers_note"]
    other = al.models.ModelHandle(gpt_tiny.model, gpt_tiny.tokenizer, "claims-int4", "causal", quant="int4wo")
    with pytest.raises(al.errors.GenerationConfigError, match="cpu_kernel=True needs an fp32, int8 or 16-bit model"):
        al.generate(other, "a", max_new_tokens=2, cpu_kernel=True)


def test_the_twin_is_made_once_and_again_when_the_weights_are_replaced(gpt_tiny):
    model = gpt_tiny.model
    twin = kernel_layers.twin_of(model)
    assert kernel_layers.twin_of(model) is twin and kernel_layers.twin_of(twin) is twin
    lin = next(m for m in model.modules() if type(m) is torch.nn.Linear or type(m) is Conv1D)
    old = lin.weight
    try:
        lin.weight = torch.nn.Parameter(old.detach().clone())  # e.g. a merged adapter assigned back
        fresh = kernel_layers.twin_of(model)
        assert fresh is not twin
        assert lin.weight.data_ptr() in {p.data_ptr() for p in fresh.parameters()}
    finally:
        lin.weight = old


def test_when_not_built_generation_never_builds_it(monkeypatch, gpt_tiny):
    """A notebook must not stall 30 s on a compile it did not ask for."""
    monkeypatch.setattr(kernel_build, "built", lambda: False)
    monkeypatch.setattr(kernel_layers, "kernel_twin", lambda model: pytest.fail("the kernel was used without asking"))
    stream = al.generate(gpt_tiny, "x", max_new_tokens=3).wait()
    assert stream.params.cpu_kernel is False and stream.plan.layers.name == "torch"
    assert ("kernel", "the CPU kernel is not built (make builds it; or cpu_kernel=True)") in stream.plan.skipped_layers


def _check_products(k, reps=20):
    torch.manual_seed(threading.get_ident() % 1000)
    cases = [(torch.randn(2304, 768), torch.randn(768)), (torch.randn(700, 3000), torch.randn(3000))]
    for _ in range(reps):
        for w, x in cases:
            torch.testing.assert_close(k.gemv(w, x, None), w @ x, rtol=1e-4, atol=1e-3)
            wt = w.t().contiguous()
            torch.testing.assert_close(k.gemv_t(wt, x, None), x @ wt, rtol=1e-4, atol=1e-3)


def test_products_are_exact_on_helper_threads_and_under_concurrent_callers():
    """Off the main thread the kernels use their own helper threads; several callers at once queue."""
    k = kernel_build.kernels()
    errors: list[BaseException] = []

    def work():
        try:
            _check_products(k)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    _check_products(k, reps=5)  # the main thread (OpenMP) meanwhile
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    assert not errors, errors[0]


def _child_uses_kernel(queue):
    k = kernel_build.kernels()
    out = []
    t = threading.Thread(target=lambda: out.append(bool(torch.allclose(
        k.gemv(torch.ones(4096, 64), torch.ones(64), None), torch.full((4096,), 64.0)))))
    t.start()
    t.join(timeout=30)
    queue.put(out == [True])


def test_a_forked_child_gets_fresh_helper_threads():
    """A fork copies no threads: the child must start its own helpers, not wait on the parent's."""
    import multiprocessing as mp

    k = kernel_build.kernels()
    t = threading.Thread(target=lambda: k.gemv(torch.ones(4096, 64), torch.ones(64), None))
    t.start()
    t.join()  # the parent's helper now exists
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_uses_kernel, args=(q,))
    p.start()
    p.join(timeout=60)
    alive = p.is_alive()
    if alive:
        p.kill()
    assert not alive, "the forked child hung on the parent's helper threads"
    assert q.get(timeout=5) is True


def test_each_torch_installation_gets_its_own_build(monkeypatch, tmp_path):
    """A binary compiled against another environment's torch headers is not reused (nor reported as built):
    loading it would recompile for 30 s inside someone's first generation."""
    mine = kernel_build._module_name()
    assert kernel_build.built()
    monkeypatch.setattr(torch, "__file__", str(tmp_path / "other-venv" / "torch" / "__init__.py"))
    assert kernel_build._module_name() != mine
    assert not kernel_build.built()


def test_loading_never_rebuilds_whichever_ninja_comes_first_on_path():
    """torch runs the ninja on PATH; Debian's (1.11) and pip's (1.12+) hash command lines differently, so a
    process without the venv on PATH used to rebuild the kernel (30 s) and the next one with it rebuilt it back."""
    import os
    import subprocess
    import sys

    kernel_build.kernels()
    name = kernel_build._module_name()
    so = next((kernel_build._cache_dir() / name.removeprefix("aigc_lab_gemv_")).glob(f"{name}*.so"))
    before = so.stat().st_mtime_ns
    venv_bin = os.path.dirname(sys.executable)
    for path in ("/usr/bin:/bin", f"{venv_bin}:/usr/bin:/bin", "/usr/bin:/bin"):
        done = subprocess.run([sys.executable, "-c", "import aigc_lab.infer.kernel_build as c; c.kernels()"],
                              env={**os.environ, "PATH": path}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert so.stat().st_mtime_ns == before, f"the kernel was rebuilt in a process with PATH={path}"
