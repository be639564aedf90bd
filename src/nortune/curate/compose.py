"""Composition: pick records so the output hits exact bucket shares and a target size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nortune.errors import InfeasibleMix


@dataclass
class Composition:
    selected: np.ndarray  # indices into the candidate arrays, in output order
    reasons: dict[int, str]  # candidate index -> drop reason for those not selected
    size: int
    needs: dict[str, int]
    notes: list[str] = field(default_factory=list)


def allocate(shares: dict[str, float], size: int) -> dict[str, int]:
    """Integer counts per bucket summing to size (largest remainder, ties by bucket name)."""
    wanted = {b: s for b, s in shares.items() if s > 0}
    raw = {b: s * size for b, s in wanted.items()}
    out = {b: int(v) for b, v in raw.items()}
    rest = size - sum(out.values())
    for b in sorted(raw, key=lambda b: (-(raw[b] - out[b]), b))[:rest]:
        out[b] += 1
    return out


def _largest_feasible(shares: dict[str, float], have: dict[str, int], cap: int | None) -> int:
    wanted = {b: s for b, s in shares.items() if s > 0}
    size = min(int(have.get(b, 0) / s) for b, s in wanted.items()) if wanted else 0
    if cap is not None:
        size = min(size, cap)
    while size > 0 and any(n > have.get(b, 0) for b, n in allocate(shares, size).items()):
        size -= 1
    return size


def _shortfall_message(needs: dict[str, int], got: dict[str, int], size: int, why: str) -> str:
    lines = [f"cannot compose {size} records with the requested shares ({why}):"]
    for bucket, need in sorted(needs.items()):
        have = got.get(bucket, 0)
        status = f"short by {need - have}" if have < need else "ok"
        lines.append(f"  {bucket}: need {need}, have {have} ({status})")
    lines.append("lower curate.target_size, change curate.shares, add sources, "
                 "or pass --allow-shortfall to write the closest feasible mix")
    return "\n".join(lines)


def _empty_buckets_message(shares: dict[str, float], have: dict[str, int]) -> str:
    """Which wanted bucket has no usable record at all (each other one shows how many it has)."""
    wanted = sorted(b for b, s in shares.items() if s > 0)
    empty = [b for b in wanted if have.get(b, 0) == 0]
    lines = [f"cannot compose any records with the requested shares: no usable record in "
             f"{', '.join(empty)} (shares {', '.join(f'{b} {shares[b]:g}' for b in empty)}):"]
    lines += [f"  {b}: have {have.get(b, 0)}" + (" (none at all)" if b in empty else "") for b in wanted]
    lines.append("add a source for " + " and ".join(empty) + ", or set its share to 0 in curate.shares")
    return "\n".join(lines)


def compose(buckets: np.ndarray, bucket_names: Sequence[str], sources: np.ndarray, scores: np.ndarray,
            shares: dict[str, float], target_size: int | None, quotas: dict[int, int], seed: int,
            quality_order: bool, allow_shortfall: bool) -> Composition:
    rng = np.random.default_rng(seed)
    n = len(buckets)
    tiebreak = rng.random(n)
    order_key = (-scores if quality_order else np.zeros(n))
    order = np.lexsort((tiebreak, order_key))  # best first, seeded ties
    have = {name: int((buckets == i).sum()) for i, name in enumerate(bucket_names)}
    notes: list[str] = []

    def pick(size: int) -> tuple[dict[str, list[int]], dict[str, int]]:
        needs = allocate(shares, size)
        taken: dict[str, list[int]] = {b: [] for b in needs}
        used: dict[int, int] = {}
        for idx in order:
            name = bucket_names[buckets[idx]]
            if name not in needs or len(taken[name]) >= needs[name]:
                continue
            src = int(sources[idx])
            if src in quotas and used.get(src, 0) >= quotas[src]:
                continue
            used[src] = used.get(src, 0) + 1
            taken[name].append(int(idx))
        return taken, needs

    if target_size is None:
        size = _largest_feasible(shares, have, None)
        if size == 0:
            raise InfeasibleMix(_empty_buckets_message(shares, have))
    else:
        size = target_size
        needs = allocate(shares, size)
        if any(have.get(b, 0) < k for b, k in needs.items()):
            if not allow_shortfall:
                raise InfeasibleMix(_shortfall_message(needs, have, size, "not enough records"))
            size = _largest_feasible(shares, have, target_size)
            notes.append(f"shortfall: wrote {size} records instead of {target_size} to keep the shares exact; "
                         + _shortfall_message(needs, have, target_size, "not enough records").splitlines()[0])
    while True:
        taken, needs = pick(size)
        got = {b: len(v) for b, v in taken.items()}
        if all(got[b] >= k for b, k in needs.items()):
            break
        if not allow_shortfall or size == 0:
            raise InfeasibleMix(_shortfall_message(needs, got, size, "per-source quotas"))
        smaller = _largest_feasible(shares, got, size - 1)
        notes.append(f"source quotas: reduced the size from {size} to {smaller}")
        size = smaller
    if size == 0:
        raise InfeasibleMix("no record can be selected with these shares")
    chosen = np.array(sorted(i for v in taken.values() for i in v), dtype=np.int64)
    selected = chosen[rng.permutation(len(chosen))]
    chosen_set = set(chosen.tolist())
    reasons: dict[int, str] = {}
    wanted = {b for b, k in needs.items() if k > 0}
    over: dict[str, int] = {}
    for idx in range(n):
        if idx in chosen_set:
            continue
        name = bucket_names[buckets[idx]]
        reasons[idx] = f"compose:unwanted_{name}" if name not in wanted else "compose:over_target"
        if name in wanted:
            over[name] = over.get(name, 0) + 1
    notes += _over_target_hints(over, shares, have, needs, size, target_size)
    return Composition(selected=selected, reasons=reasons, size=size, needs=needs, notes=notes)


def _over_target_hints(over: dict[str, int], shares: dict[str, float], have: dict[str, int],
                       needs: dict[str, int], size: int, target_size: int | None) -> list[str]:
    """Which setting to change to keep the records the mix left out of each bucket."""
    if target_size is not None and size == target_size:
        limit = f"curate.target_size is {size}"
        fix = "raise curate.target_size"
    else:
        wanted = {b: s for b, s in shares.items() if s > 0}
        scarce = min(wanted, key=lambda b: (have.get(b, 0) / wanted[b], b))
        limit = f"the size ({size}) is set by {scarce}: {have.get(scarce, 0)} records at share {wanted[scarce]:g}"
        fix = f"add {scarce} records"
    return [f"the mix left out {count} {bucket} records over its target ({needs[bucket]} = share "
            f"{shares[bucket]:g} of {size}; {limit}): to keep them, raise curate.shares.{bucket} or {fix} "
            f"(each is listed in dropped.jsonl)" for bucket, count in sorted(over.items())]
