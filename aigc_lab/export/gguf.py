"""Target ``gguf``: one self-contained file for llama.cpp, Ollama and LM Studio, written with the ``gguf`` library.

Precisions: ``f32``, ``f16``, ``bf16``, ``q8_0``, ``q4_0`` (numpy quantizers from ``gguf``), and the K-quants
(``q4_k_m``...) through llama.cpp's own quantizer when llama-cpp-python is installed. Norms and biases
stay f32, as in llama.cpp's converter. Under ``q4_0`` the token embedding and output layer are ``q8_0``
(llama.cpp's own quantizer also keeps the output layer above 4 bits); a matrix whose rows are not a multiple
of the 32-value block falls back to f16, as llama.cpp's quantizer does. The whole file (architecture,
tokenizer, chat template, eos ids) is planned and checked first; then it is written to a temp file and
renamed, and an Ollama ``Modelfile`` is written beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_file
from ..errors import ExportError
from ..progress import progress_bar
from . import ollama
from .gguf_arch import ArchPlan, TensorPlan, plan_arch
from .gguf_vocab import GgufVocab, build_vocab
from .llama_quantize import K_QUANTS, llama_cpp, quantize_file
from .result import ExportResult
from .source import ExportSource

QUANTS: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0", "q4_0")  # written by us (numpy)
ALL_QUANTS: tuple[str, ...] = (*QUANTS, *K_QUANTS)
OPTIONS: tuple[str, ...] = ("quant", "modelfile", "system", "ollama_name", "progress")


def _qtype(name: str) -> Any:
    import gguf

    return {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
            "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
            "q4_0": gguf.GGMLQuantizationType.Q4_0}[name]


def _file_type(name: str) -> int:
    import gguf

    return {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
            "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[name]


def tensor_type(t: TensorPlan, quant: str) -> Any:
    """The ggml type one tensor is stored in under ``quant`` (see the module docstring for the rules)."""
    import gguf

    T = gguf.GGMLQuantizationType
    if t.kind == "vector":
        return T.F32
    want = T.Q8_0 if quant == "q4_0" and t.kind in ("embed", "output") else _qtype(quant)
    block = gguf.GGML_QUANT_SIZES[want][0]
    return T.F16 if t.shape[-1] % block else want


def _encode(values: Any, qtype: Any) -> Any:
    import gguf
    import numpy as np

    if qtype == gguf.GGMLQuantizationType.F32:
        return values.astype(np.float32, copy=False)
    if qtype == gguf.GGMLQuantizationType.F16:
        return values.astype(np.float16)
    return gguf.quants.quantize(values, qtype)


def _info(t: TensorPlan, qtype: Any) -> tuple[tuple[int, ...], Any, int, Any]:
    """(shape, numpy dtype, bytes, raw ggml type or None) as ``GGUFWriter.add_tensor_info`` takes them."""
    import gguf
    import numpy as np

    T = gguf.GGMLQuantizationType
    if qtype in (T.F32, T.F16):
        dtype = np.float32 if qtype == T.F32 else np.float16
        return t.shape, dtype, math.prod(t.shape) * np.dtype(dtype).itemsize, None
    shape = gguf.quant_shape_to_byte_shape(t.shape, qtype)
    return shape, np.uint8, math.prod(shape), qtype


@dataclass
class GgufPlan:
    """A checked export: architecture, vocabulary, per-tensor types; ``write`` puts it on disk."""

    source: ExportSource
    arch: ArchPlan
    vocab: GgufVocab
    quant: str  # what the user asked for
    stored: str  # what we write: ``quant``, or f32 that llama.cpp's quantizer turns into a K-quant
    types: list[Any]

    def writer(self) -> Any:
        import gguf

        w = gguf.GGUFWriter(path=None, arch=self.arch.arch)
        w.add_type(gguf.GGUFType.MODEL)
        w.add_name(self.source.handle.name)
        w.add_file_type(_file_type(self.stored))
        if self.stored in ("q8_0", "q4_0"):
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        self.arch.write(w)
        self.vocab.write(w)
        for t, qtype in zip(self.arch.tensors, self.types, strict=True):
            shape, dtype, nbytes, raw = _info(t, qtype)
            w.add_tensor_info(t.name, shape, dtype, nbytes, raw_dtype=raw)
        return w

    def write(self, path: Path, progress: bool = True) -> None:
        """Write the file at ``path`` (a temp path: the caller renames it), one tensor at a time."""
        if self.stored == self.quant:
            return self._write(path, progress)
        f32 = path.with_name(path.name + ".f32")
        try:
            self._write(f32, progress)
            quantize_file(f32, path, self.quant)
        finally:
            f32.unlink(missing_ok=True)

    def _write(self, path: Path, progress: bool) -> None:
        w = self.writer()
        try:
            w.write_header_to_file(path=path)
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            bar = progress_bar(total=len(self.types), desc=f"gguf {self.stored}", unit="tensor", disable=not progress)
            with bar:
                for t, qtype in zip(self.arch.tensors, self.types, strict=True):
                    w.write_tensor_data(_encode(t.load(), qtype))
                    bar.update(1)
        finally:
            w.close()


def plan(source: ExportSource, quant: str = "f16") -> GgufPlan:
    """Check that ``source`` can be exported at ``quant`` and describe the file; nothing is written."""
    if quant not in ALL_QUANTS:
        raise ExportError(f"quant={quant!r}: choose one of {', '.join(ALL_QUANTS)}")
    stored = "f32" if quant in K_QUANTS else quant
    if quant in K_QUANTS:
        llama_cpp(quant)  # installed, or an ExportError now, before anything is written
    if source.handle.kind != "causal":
        raise ExportError(f"GGUF export needs a decoder-only causal LM; this model is {source.handle.kind}: "
                          "export it as target='hf' instead")
    arch = plan_arch(source.model)
    n_vocab = source.model.get_input_embeddings().weight.shape[0]
    vocab = build_vocab(source.tokenizer, n_vocab, source.eos_ids, source.chat_template)
    return GgufPlan(source, arch, vocab, quant, stored, [tensor_type(t, stored) for t in arch.tensors])


def export_gguf(source: ExportSource, path: Path, *, quant: str = "f16", modelfile: bool = True,
                system: str | None = None, ollama_name: str | None = None, progress: bool = True) -> ExportResult:
    """Write ``path`` (a ``.gguf``) and, with ``modelfile=True``, an Ollama ``Modelfile`` beside it."""
    if path.suffix != ".gguf":
        raise ExportError(f"{path}: a GGUF file name ends in .gguf")
    p = plan(source, quant)
    files = [path]
    command = None
    text = None
    if modelfile:
        text = ollama.modelfile_text(path, source.stop_texts(), system)
        name = ollama.model_name(path, ollama_name)
    else:
        name = None
    write_file(path, lambda tmp: p.write(tmp, progress))
    if text is not None:
        mf = write_file(path.with_name("Modelfile"), lambda tmp: tmp.write_text(text))
        files.append(mf)
        command = ollama.create_command(name, mf)
    fallback = sorted({t.name for t, q in zip(p.arch.tensors, p.types, strict=True)
                       if t.kind != "vector" and q.name.lower() != p.stored}) if p.stored == quant else []
    details = {"arch": p.arch.arch, "quant": quant, "tensors": len(p.types), "pre_tokenizer": p.vocab.pre,
               "eos_ids": source.eos_ids, "chat_template": p.vocab.chat_template is not None,
               "kept_at_higher_precision": fallback, "notes": p.arch.notes}
    return ExportResult("gguf", path, tuple(files), command, details)
