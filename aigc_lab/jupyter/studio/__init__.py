"""``Studio()``: the aigc-lab workflow as an ipywidgets app (Data | Model | Fine-tune | Optimise | Generate |
Compare | Export).

    studio = Studio(); studio                  # in a notebook cell
    studio.model_name = "starter:gpt-tiny"; studio.load_model(); studio.wait()
    studio.model, studio.stream, studio.comparison ...
"""

from .app import Studio
from .common import Panel, UserInputError

__all__ = ["Panel", "Studio", "UserInputError"]
