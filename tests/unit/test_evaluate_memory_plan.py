"""The batch planner obeys the memory budget: context batches and answer chunks."""

from nortune.evaluate.backend import _Group, chunk_rows, plan_batches
from nortune.evaluate.memory import Shape

# The embedded Gemma 3 270M's sizes: 15 sliding layers (window 512) + 3 global, fp32.
GEMMA3_270M = Shape(layers=18, hidden=640, intermediate=2048, heads=4, head_dim=256, kv_heads=1, vocab=262_144,
                    windows=tuple(None if i % 6 == 5 else 512 for i in range(18)), itemsize=4)


def groups(n: int, width: int, choices: int, answer: int) -> list[_Group]:
    return [_Group(list(range(i, i + width)), [(i * choices + c, [1] * answer, None) for c in range(choices)])
            for i in range(n)]


def test_sliding_layers_keep_their_window_in_the_cache_estimate():
    per_token = 2 * 1 * 256 * 4
    assert GEMMA3_270M.cache_bytes(100) == 18 * 100 * per_token
    assert GEMMA3_270M.cache_bytes(2000) == (15 * 512 + 3 * 2000) * per_token


def test_planner_cuts_context_batches_by_the_budget_not_only_by_tokens():
    many = groups(40, 60, 5, 20)
    assert len(plan_batches(many, 4096)) == 1  # tokens alone: one batch of 40 contexts
    budget = GEMMA3_270M.context_bytes(8, 60) + GEMMA3_270M.row_bytes(60, 19)
    batches = plan_batches(many, 4096, budget, GEMMA3_270M)
    assert all(len(b) <= 8 for b in batches) and sum(len(b) for b in batches) == 40
    for b in batches:
        assert GEMMA3_270M.context_bytes(len(b), 60) + GEMMA3_270M.row_bytes(60, 19) <= budget


def test_answer_chunks_fit_what_the_context_left():
    lengths = [19] * 200  # 200 answer rows of 20 tokens: 3.7 GiB of fp32 logits if run at once
    used = GEMMA3_270M.context_bytes(40, 60)
    budget = used + 10 * GEMMA3_270M.row_bytes(60, 19)
    chunks = chunk_rows(lengths, 60, used, 100_000, budget, GEMMA3_270M)
    assert [hi - lo for lo, hi in chunks] == [10] * 20
    assert chunk_rows(lengths, 60, used, 190, None, None)[0] == (0, 10)  # batch_tokens bounds positions too
    assert chunk_rows(lengths, 60, budget * 2, 100_000, budget, GEMMA3_270M)[0] == (0, 1)  # never zero rows
