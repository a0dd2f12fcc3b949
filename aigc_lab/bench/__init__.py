"""Side-by-side comparisons of models and runs: speed (TTFT, tokens/s) and quality (perplexity, agreement)."""

from .compare import Variant, compare
from .quality import greedy_agreement, mean_token_nll, text_perplexity

__all__ = ["Variant", "compare", "greedy_agreement", "mean_token_nll", "text_perplexity"]
