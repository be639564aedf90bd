"""nortune: surgical Norwegian fine-tuning of open LLMs, measured honestly."""

__version__ = "0.1.0"
