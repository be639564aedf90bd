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
3. the answer rows run on top of that cache (its rows repeated per answer choice), in chunks
   sized by ``batch_tokens`` and the memory budget (``memory_gib``, see ``memory.py``); only the
   target tokens' log-probabilities and greedy flags leave a chunk.

The sum of log-probabilities and the greedy flag are computed exactly as lm-eval does, so
results match ``hf`` to float rounding (a test compares item by item). Requests longer than
the model's window fall back to lm-eval's own code path.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from nortune.evaluate.memory import GIB, Shape, default_batch_tokens, default_memory_gib

log = logging.getLogger(__name__)


@dataclass
class _Group:
    """All requests that share one tokenised context."""

    context: list[int]
    members: list[tuple[int, list[int], tuple[str, str] | None]] = field(default_factory=list)


def plan_batches(groups: list[_Group], batch_tokens: int, budget: int | None = None,
                 shape: Shape | None = None) -> list[list[_Group]]:
    """Longest context first; a batch is cut when its padded context tokens would pass
    ``batch_tokens``, or when its context forward plus one answer row would pass the memory
    ``budget`` (bytes). The answer rows are then scored in chunks that fit what is left."""
    ordered = sorted(groups, key=lambda g: (-len(g.context), g.context))
    batches: list[list[_Group]] = []
    current: list[_Group] = []
    for group in ordered:
        width = len(current[0].context) if current else len(group.context)
        need = 0
        if budget is not None and shape is not None:
            tail = max(len(c) for g in current + [group] for _, c, _ in g.members) - 1
            need = shape.context_bytes(len(current) + 1, width) + shape.row_bytes(width, tail)
        if current and ((len(current) + 1) * width > batch_tokens or (budget is not None and need > budget)):
            batches.append(current)
            current = []
        current.append(group)
    if current:
        batches.append(current)
    return batches


def chunk_rows(lengths: list[int], width: int, first: int, batch_tokens: int, budget: int | None,
               shape: Shape | None) -> list[tuple[int, int]]:
    """Split answer rows (sorted longest first; ``lengths`` = continuation positions after the
    first token) into ``[start, end)`` chunks whose continuation forward stays under
    ``batch_tokens`` positions and the memory left after the context forward (``first`` bytes)."""
    chunks, start = [], 0
    while start < len(lengths):
        tail = max(lengths[start], 1)
        rows = max(1, batch_tokens // tail)
        if budget is not None and shape is not None:
            rows = min(rows, max(1, (budget - first) // shape.row_bytes(width, tail)))
        chunks.append((start, min(start + rows, len(lengths))))
        start = chunks[-1][1]
    return chunks


@register_model("nortune")
class PrefixSharingLM(HFLM):
    """lm-eval's ``hf`` model with a prefix-sharing ``_loglikelihood_tokens``.

    Extra model_args: ``batch_tokens`` (positions per forward; default 256 on CPU, from the sweep
    in docs/evaluate.md, 4096 on a GPU), ``memory_gib`` (working memory on top of the weights; default: half the
    free RAM, or 80 % of free GPU memory, once the model is loaded), ``merge_peft`` (merge a
    ``peft=`` adapter into the weights for speed, default true).
    """

    def __init__(self, *args, batch_tokens: int | str | None = None, memory_gib: float | str | None = None,
                 merge_peft: bool | str = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batch_tokens = int(batch_tokens) if batch_tokens not in (None, "", "None", "auto") \
            else default_batch_tokens(str(self.device))
        if str(merge_peft).lower() in ("true", "1") and hasattr(self._model, "merge_and_unload"):
            self._model = self._model.merge_and_unload()
        gib = float(memory_gib) if memory_gib not in (None, "", "None", "auto") else default_memory_gib(str(self.device))
        self.memory_gib = gib
        self.memory_budget = int(gib * GIB)
        self.shape = Shape.of(self.model)
        import inspect

        # transformers >= 5.2x names the cache argument `cache`; older releases `past_key_values`.
        self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters \
            else "past_key_values"
        self.forward_tokens = 0   # padded positions fed to the model (benchmark counter)
        self.forward_calls = 0

    def settings(self) -> dict:
        """What decided the batches (recorded in results.json)."""
        return {"batch_tokens": self.batch_tokens, "memory_gib": round(self.memory_gib, 3)}

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
        batches = plan_batches(list(by_context.values()), self.batch_tokens, self.memory_budget, self.shape)
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

        # Longest answers first, so each chunk pads to about its own length.
        rows = sorted(((b, index, cont, request_str) for b, group in enumerate(batch)
                       for index, cont, request_str in group.members), key=lambda r: -len(r[2]))
        used = self.shape.context_bytes(len(batch), width)
        for lo, hi in chunk_rows([len(r[2]) - 1 for r in rows], width, used, self.batch_tokens,
                                 self.memory_budget, self.shape):
            yield from self._score_rows(rows[lo:hi], first, cache, mask, positions, pad)
        del cache

    def _score_rows(self, rows, first, cache, mask, positions, pad):
        """One chunk of answer rows on top of the shared cache: only the target tokens'
        log-probabilities and the greedy flags leave it, never the [rows, tail, vocab] tensor."""
        device = self.device
        tail = max(len(cont) for _, _, cont, _ in rows) - 1
        picked = greedy = None
        if tail > 0:
            row_of = torch.tensor([b for b, _, _, _ in rows], device=device)
            cont_ids = torch.full((len(rows), tail), pad, dtype=torch.long)
            cont_mask = torch.zeros((len(rows), tail), dtype=torch.long)
            for r, (_, _, cont, _) in enumerate(rows):
                if len(cont) > 1:
                    cont_ids[r, : len(cont) - 1] = torch.tensor(cont[:-1])
                    cont_mask[r, : len(cont) - 1] = 1
            targets = torch.zeros((len(rows), tail), dtype=torch.long)
            for r, (_, _, cont, _) in enumerate(rows):
                targets[r, : len(cont) - 1] = torch.tensor(cont[1:])
            cont_ids, cont_mask, targets = cont_ids.to(device), cont_mask.to(device), targets.to(device)
            start = positions[row_of, -1:] + 1
            out = self._forward(input_ids=cont_ids, attention_mask=torch.cat([mask[row_of], cont_mask], dim=1),
                                position_ids=start + torch.arange(tail, device=device), use_cache=True,
                                **{self._cache_arg: _select_rows(cache, row_of)})
            scores = self._log_softmax(out.logits)  # [chunk, tail, vocab]: predicts tokens 1..
            del out
            picked = scores.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [chunk, tail]
            greedy = scores.argmax(dim=-1) == targets
            del scores

        for r, (b, index, cont, request_str) in enumerate(rows):
            target = torch.tensor(cont[:1], device=device)
            logprobs = first[b].gather(0, target)
            is_greedy = bool(first[b].argmax() == target[0])
            if len(cont) > 1:
                logprobs = torch.cat([logprobs, picked[r, : len(cont) - 1]])
                is_greedy = is_greedy and bool(greedy[r, : len(cont) - 1].all())
            yield index, (float(logprobs.sum()), is_greedy), request_str


def _select_rows(cache, row_of: torch.Tensor):
    """A new cache holding ``row_of``'s rows of ``cache``; ``cache`` itself stays unchanged for
    the next chunk (shallow copies of the cache and its layers, then transformers'
    ``reorder_cache``, which replaces each layer's tensors by an ``index_select``)."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        chosen = copy.deepcopy(cache)
    else:
        chosen = copy.copy(cache)
        chosen.layers = [copy.copy(layer) for layer in layers]
    chosen.reorder_cache(row_of)
    return chosen
