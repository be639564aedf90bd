"""NorEval evaluation: lm-eval's own ``noreval`` tasks, a prefix-sharing backend, statistics, reports.

Nothing heavy is imported here; ``run`` loads lm-eval and torch when called.
"""

from __future__ import annotations

from typing import Any


def run(recipe, label: str = "base", force: bool = False) -> dict[str, Any]:
    from nortune.evaluate.stage import run as _run

    return _run(recipe, label=label, force=force)
