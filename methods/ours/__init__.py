"""The paper's method: fine-tuned CLIP with multiclass prompts and the multi-scale mechanism."""

from scrapbench.methods.ours.method import FineTunedCLIP

__all__ = ["FineTunedCLIP"]
