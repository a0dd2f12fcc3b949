"""Streaming inference: a decode loop that timestamps every token and publishes it on the bus."""

from .chat import Conversation, chat, reply
from .compiled import CompileError, compile_model
from .cpu_gemv import KernelBuildError, build_kernel, fast_cpu
from .detok import IncrementalDetokenizer
from .engine import TokenStream, generate
from .metrics import summarize
from .params import GenerationParams

__all__ = ["CompileError", "Conversation", "GenerationParams", "IncrementalDetokenizer", "KernelBuildError",
           "TokenStream", "build_kernel", "chat", "compile_model", "fast_cpu", "generate", "reply", "summarize"]
