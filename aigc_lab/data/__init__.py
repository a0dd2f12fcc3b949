"""Data preparation: load, clean, augment, template, split and measure text data; offline sample corpora.

    import aigc_lab as al
    ds = al.data.load("reviews.csv", text="text").clean(dedupe=True, min_chars=20)
    splits = ds.split(val=0.1, test=0.1, seed=0)
    texts = splits.train.template("plain")
    chat = al.data.load("conversations.jsonl")   # OpenAI messages / ShareGPT / Alpaca (format="alpaca")

Every step publishes an ``aigc_lab.events.DataStep`` on the bus and is listed in ``ds.report``.
"""

from . import chat_templates, conversations, samples
from .augment import PARAPHRASES
from .dataset import Dataset, Report, Splits
from .loading import BadRowsWarning, load
from .near_dup import near_duplicates
from .stats import TokenStats

__all__ = ["BadRowsWarning", "Dataset", "PARAPHRASES", "Report", "Splits", "TokenStats", "chat_templates",
           "conversations", "load", "near_duplicates", "samples"]
