"""A log-likelihood backend for lm-evaluation-harness that computes a shared context once.

lm-eval's ``hf`` model scores every (context, answer choice) pair as its own sequence, so a
question with five text answers pays for its context five times, and the LM head runs over
every position. ``nortune`` (registered as an lm-eval model type) subclasses that model and
only replaces ``_loglikelihood_tokens``:

1. requests are grouped by their tokenised context (lm-eval's own ``_encode_pair`` produced
   the tokens, so tokenisation, BOS handling and the trailing-space rule are identical);
2. the contexts of a batch run once, left-padded (relative positions, hence RoPE and sliding
   windows, are those of an unpadded run), keeping the KV cache and only the last position's
   logits;
3. the cache rows are repeated per answer choice and all choices of the batch run together,
   right-padded, on top of it.

The sum of log-probabilities and the greedy flag are computed exactly as lm-eval does, so
results match ``hf`` to float rounding (a test compares item by item). Requests longer than
the model's window fall back to lm-eval's own code path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

log = logging.getLogger(__name__)


@dataclass
class _Group:
    """All requests that share one tokenised context."""

    context: list[int]
    members: list[tuple[int, list[int], tuple[str, str] | None]] = field(default_factory=list)


def plan_batches(groups: list[_Group], batch_tokens: int, cache_tokens: int) -> list[list[_Group]]:
    """Longest context first; a batch is cut when its padded context tokens or its repeated
    cache rows (one per answer choice) would pass the budget."""
    ordered = sorted(groups, key=lambda g: (-len(g.context), g.context))
    batches: list[list[_Group]] = []
    current: list[_Group] = []
    rows = 0
    for group in ordered:
        width = len(current[0].context) if current else len(group.context)
        cont = max(len(c) for _, c, _ in group.members)
        new_rows = rows + len(group.members)
        if current and ((len(current) + 1) * width > batch_tokens
                        or new_rows * (width + cont) > cache_tokens):
            batches.append(current)
            current, rows = [], 0
            new_rows = len(group.members)
        current.append(group)
        rows = new_rows
    if current:
        batches.append(current)
    return batches


@register_model("nortune")
class PrefixSharingLM(HFLM):
    """lm-eval's ``hf`` model with a prefix-sharing ``_loglikelihood_tokens``.

    Extra model_args: ``batch_tokens`` (padded context tokens per forward, default 4096),
    ``cache_tokens`` (cache positions after repeating rows per choice, default 8x batch_tokens),
    ``merge_peft`` (merge a ``peft=`` adapter into the weights for speed, default true).
    """

    def __init__(self, *args, batch_tokens: int | str = 4096, cache_tokens: int | str | None = None,
                 merge_peft: bool | str = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batch_tokens = int(batch_tokens)
        self.cache_tokens = int(cache_tokens) if cache_tokens else 8 * self.batch_tokens
        if str(merge_peft).lower() in ("true", "1") and hasattr(self._model, "merge_and_unload"):
            self._model = self._model.merge_and_unload()
        import inspect

        # transformers >= 5.2x names the cache argument `cache`; older releases `past_key_values`.
        self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters \
            else "past_key_values"
        self.forward_tokens = 0   # padded positions fed to the model (benchmark counter)
        self.forward_calls = 0

    # -- lm-eval entry point --------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        too_long: list[int] = []
        by_context: dict[tuple[int, ...], _Group] = {}
        for i, (request_str, context, continuation) in enumerate(requests):
            if not context or not continuation:
                raise ValueError("empty context or continuation reached the backend")
            if len(context) + len(continuation) > self.max_length + 1:
                too_long.append(i)
                continue
            key = tuple(context)
            group = by_context.get(key)
            if group is None:
                group = by_context[key] = _Group(list(context))
            group.members.append((i, list(continuation), request_str))
        if too_long:
            log.warning("%d request(s) exceed the %d-token window: scored by lm-eval's own path "
                        "(left-truncated)", len(too_long), self.max_length)
            for i, answer in zip(too_long, super()._loglikelihood_tokens(
                    [requests[i] for i in too_long], disable_tqdm=True)):
                results[i] = answer
        batches = plan_batches(list(by_context.values()), self.batch_tokens, self.cache_tokens)
        bar = tqdm(total=len(requests) - len(too_long), disable=disable_tqdm or self.rank != 0,
                   desc="nortune loglikelihood")
        for batch in batches:
            for index, answer, request_str in self._score_batch(batch):
                results[index] = answer
                if request_str is not None:
                    self.cache_hook.add_partial("loglikelihood", request_str, answer)
                bar.update(1)
        bar.close()
        return results  # type: ignore[return-value]

    # -- the two forwards -------------------------------------------------------------------
    def _forward(self, **kwargs):
        ids = kwargs["input_ids"]
        self.forward_tokens += ids.numel()
        self.forward_calls += 1
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            return self.model(**kwargs)

    def _log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)

    def _score_batch(self, batch: list[_Group]):
        device = self.device
        width = max(len(g.context) for g in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, group in enumerate(batch):
            n = len(group.context)
            ids[b, width - n:] = torch.tensor(group.context)
            mask[b, width - n:] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        out = self._forward(input_ids=ids, attention_mask=mask, position_ids=positions,
                            use_cache=True, logits_to_keep=1)
        first = self._log_softmax(out.logits[:, -1, :])  # [groups, vocab]: predicts token 0
        cache = getattr(out, "cache", None) or out.past_key_values
        del out

        rows = [(b, index, cont, request_str) for b, group in enumerate(batch)
                for index, cont, request_str in group.members]
        tail = max(len(cont) for _, _, cont, _ in rows) - 1
        rest = None
        if tail > 0:
            row_of = torch.tensor([b for b, _, _, _ in rows], device=device)
            cache.reorder_cache(row_of)
            cont_ids = torch.full((len(rows), tail), pad, dtype=torch.long)
            cont_mask = torch.zeros((len(rows), tail), dtype=torch.long)
            for r, (_, _, cont, _) in enumerate(rows):
                if len(cont) > 1:
                    cont_ids[r, : len(cont) - 1] = torch.tensor(cont[:-1])
                    cont_mask[r, : len(cont) - 1] = 1
            cont_ids, cont_mask = cont_ids.to(device), cont_mask.to(device)
            start = positions[row_of, -1:] + 1
            out = self._forward(input_ids=cont_ids, attention_mask=torch.cat([mask[row_of], cont_mask], dim=1),
                                position_ids=start + torch.arange(tail, device=device), use_cache=True,
                                **{self._cache_arg: cache})
            rest = self._log_softmax(out.logits)  # [rows, tail, vocab]: predicts tokens 1..
            del out
        del cache

        for r, (b, index, cont, request_str) in enumerate(rows):
            target = torch.tensor(cont, device=device)
            scores = first[b: b + 1]
            if len(cont) > 1:
                scores = torch.cat([scores, rest[r, : len(cont) - 1]], dim=0)
            greedy = bool((scores.argmax(dim=-1) == target).all())
            logprob = float(scores.gather(1, target.unsqueeze(-1)).sum())
            yield index, (logprob, greedy), request_str
