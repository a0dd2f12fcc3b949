"""transformers' renames are absorbed in one place (models/compat.py): our code paths, run in a fresh
process (transformers warns once per process), print no deprecation warning on the installed release."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

from transformers.modeling_outputs import CausalLMOutputWithPast

from aigc_lab.models import compat

_SCRIPT = textwrap.dedent("""
    import warnings
    warnings.simplefilter("always")          # every warning once per call site, whatever the defaults
    import torch
    import aigc_lab as al
    from aigc_lab.models.compat import cache_kwargs, cache_of
    corpus = ["The for statement is used to iterate over the elements of a sequence."] * 30
    for name in ("starter:gpt-tiny", "starter:llama-tiny", "starter:t5-tiny", "starter:lstm-tiny"):
        m = al.models.build_starter(name, corpus)
        al.generate(m, "The for statement", max_new_tokens=6).wait()                 # one prompt
        for s in al.generate(m, ["The for statement", "x"], max_new_tokens=6):     # a batch
            s.wait()
        if name != "starter:t5-tiny":                                               # the model's own cache
            ids = m.tokenizer("The for", return_tensors="pt")["input_ids"]
            out = m.model(input_ids=ids, use_cache=True)
            m.model(input_ids=ids[:, -1:], use_cache=True, **cache_kwargs(cache_of(out)))
        print(name, "ok", flush=True)
    """)


def test_cache_name_is_the_installed_librarys():
    fields = {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
    assert compat.CACHE in fields
    assert compat.CACHE == ("cache" if "cache" in fields else "past_key_values")
    assert compat.cache_kwargs(1) == {compat.CACHE: 1}


def test_our_decode_paths_print_no_deprecation_warning():
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(" ok") == 4, proc.stdout
    noisy = [line for line in proc.stderr.splitlines()
             if "deprecat" in line.lower() or "FutureWarning" in line or "will be removed" in line]
    assert not noisy, "\n".join(noisy[:10])
