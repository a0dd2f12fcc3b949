"""Streaming inference: a decode loop that timestamps every token and publishes it on the bus."""

from ..errors import CompileError, KernelBuildError
from .backends import LAYER_BACKENDS, STEPPERS, Plan
from .chat import Conversation, chat, reply
from .compiled import compile_model
from .detok import IncrementalDetokenizer
from .engine import TokenStream, explain, generate
from .kernel_build import build_kernel
from .kernel_layers import fast_cpu
from .metrics import summarize
from .params import GenerationParams

__all__ = ["LAYER_BACKENDS", "STEPPERS", "CompileError", "Conversation", "GenerationParams", "IncrementalDetokenizer",
           "KernelBuildError", "Plan", "TokenStream", "build_kernel", "chat", "compile_model", "explain", "fast_cpu",
           "generate", "reply", "summarize"]
