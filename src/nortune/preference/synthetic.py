"""Synthetic preference pairs, the recipe's failed variant, so users can reproduce it.

chosen = the curated answer, rejected = the untouched base model's own greedy answer to
the same prompt. Every pair is marked ``synthetic`` and counted as such in the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nortune.config import Recipe
from nortune.curate import training_data
from nortune.jsonl import iter_jsonl
from nortune.runs import atomic_writer
from nortune.chat_records import check_messages


def synthetic_source(recipe: Recipe) -> Path:
    """``preference.synthetic.source``, else the SFT training data (train.data, else the curate output)."""
    return recipe.preference.synthetic.source or training_data(recipe, recipe.train.data)


def build_pairs(recipe: Recipe, base: Any, tokenizer: Any, out: Path) -> int:
    """Write up to ``max_pairs`` pairs to ``out``; returns how many were written."""
    import torch

    settings = recipe.preference.synthetic
    source = synthetic_source(recipe)
    written = 0
    base.eval()
    with atomic_writer(out) as handle:
        for line_no, record in iter_jsonl(source):
            if written >= settings.max_pairs:
                break
            messages = check_messages(record, f"{source}:{line_no}")
            last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
            if last is None or not messages[last]["content"].strip():
                continue
            prompt = messages[:last]
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)
            with torch.no_grad():
                generated = base.generate(**ids.to(base.device), max_new_tokens=settings.max_new_tokens,
                                          do_sample=False)
            rejected = tokenizer.decode(generated[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
            handle.write(json.dumps({"id": f"synthetic-{line_no}", "prompt": prompt,
                                     "chosen": [messages[last]],
                                     "rejected": [{"role": "assistant", "content": rejected.strip()}],
                                     "synthetic": True}, ensure_ascii=False) + "\n")
            written += 1
    return written
