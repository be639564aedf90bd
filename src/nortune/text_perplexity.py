"""Perplexity of text sets, text by text, and the paired verdict on two scorings of the same texts.

Shared by the forgetting guard after training (``evaluate.perplexity``: base vs tuned on the held-out
split) and the watch during training (``train.watch``: step N vs step 0 on the dev split), so both
score and judge with the same code: each text's summed NLL and token count, the relative change of a
set's perplexity with a paired bootstrap interval over texts, and one rule for what is forgetting.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from nortune.config.names import MIN_VERDICT_ITEMS, too_few
from nortune.jsonl import DataError

SEED = 20  # the bootstrap's fixed seed: the same files give the same interval


def read_texts(path: Path) -> list[str]:
    """One text per non-blank line."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def score(model: Any, tokenizer: Any, texts: list[str], max_tokens: int, batch_size: int,
          device: str, memory_bytes: int | None = None) -> list[tuple[float, int]]:
    """(summed NLL in nats, scored tokens) per text: right-padded batches, attention mask, no gradient.

    ``memory_bytes`` caps what one batch's logits take (rows x positions x vocabulary x 4 bytes, twice: the
    logits and cross-entropy's log-softmax), so a 262k vocabulary cannot take gigabytes; ``batch_size`` caps rows.
    """
    import torch

    encoded = [tokenizer(t).input_ids[:max_tokens] for t in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    per_position = 2 * 4 * model.config.get_text_config().vocab_size
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    with torch.no_grad():
        for idx in _batches(encoded, batch_size, memory_bytes // per_position if memory_bytes else None):
            width = max(len(encoded[i]) for i in idx)
            if width < 2:
                continue  # nothing to score: the check below names the text
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, :len(encoded[i])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1]
            # cross_entropy in fp32 without a second vocabulary-sized copy (Gemma's vocabulary is 262k)
            token_nll = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].to(device).flatten(),
                                                          reduction="none").view(len(idx), width - 1)
            scored = mask[:, 1:].to(device).bool()
            nll = torch.where(scored, token_nll, 0).double().sum(dim=1).cpu().tolist()
            for row, i in enumerate(idx):
                out[i] = (float(nll[row]), int(scored[row].sum().item()))
    for text, (_, count) in zip(texts, out):
        if count == 0:
            raise DataError(f"held-out text {text[:40]!r}: fewer than 2 tokens, nothing to score")
    return out


def _batches(encoded: list[list[int]], rows: int, positions: int | None) -> list[list[int]]:
    """Text indices in batches of similar length (shortest first): at most ``rows`` texts and, padded to the
    longest, at most ``positions`` positions (a longer text alone)."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    batches: list[list[int]] = []
    for i in order:
        last = batches[-1] if batches else None
        fits = positions is None or (len(last or []) + 1) * len(encoded[i]) <= positions
        if last is not None and len(last) < rows and fits:
            last.append(i)
        else:
            batches.append([i])
    return batches


def ratio_bootstrap(base_nll: list[float], base_tokens: list[int], tuned_nll: list[float],
                    tuned_tokens: list[int], samples: int, confidence: float,
                    seed: int = SEED) -> tuple[float, tuple[float, float]]:
    """Relative change tuned/base - 1 of perplexity and its paired bootstrap interval (texts resampled)."""
    bn, bt, tn, tt = (np.asarray(a, dtype=float) for a in (base_nll, base_tokens, tuned_nll, tuned_tokens))
    point = math.exp(tn.sum() / tt.sum() - bn.sum() / bt.sum()) - 1
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(bn), size=(samples, len(bn)))
    log_ratio = tn[idx].sum(1) / tt[idx].sum(1) - bn[idx].sum(1) / bt[idx].sum(1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(np.exp(log_ratio) - 1, [alpha, 1 - alpha])
    return point, (float(lo), float(hi))


def verdict(change: float, ci: tuple[float, float], trained: bool, tolerance: float,
            texts: int) -> tuple[str, bool]:
    """(verdict, forgetting) for one set: see the module docstring for the rule."""
    if texts < MIN_VERDICT_ITEMS:
        return too_few(texts, "texts"), False
    if ci[1] < 0:
        return "improved", False
    if ci[0] <= 0:
        return "no significant change", False
    if trained:
        return "FORGETTING (trained language got worse)", True
    if change > tolerance:
        return f"FORGETTING (rise beyond {tolerance:.0%})", True
    return f"rise within the {tolerance:.0%} tolerance", False
