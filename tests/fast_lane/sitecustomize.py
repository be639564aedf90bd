"""The fast lane's guard: the heavy entry points raise in every Python process the lane starts.

``pytest --fast`` puts this folder first on ``PYTHONPATH``, so Python loads this file at start-up in
the test process's children too (the ``nortune`` CLI, llama.cpp's native child, launched ranks).
A test that trains (in this process, a CLI child or a launched rank), converts or quantises a model,
builds llama.cpp or opens a browser then fails in the fast lane with a message that says to mark it, instead of making the lane
slow. The modules are patched as they are imported, so a process that never imports them pays nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

# module -> the callables in it that do heavy work ("Class.method" or "function"), and what that work is.
HEAVY = {
    "transformers.trainer": (("Trainer.train", "Trainer._inner_training_loop"), "trains a model"),
    "nortune.export.gguf_files": (("convert", "quantize", "quantize_in_process"), "converts or quantises a GGUF"),
    "nortune.export.toolchain": (("_build_wheel",), "builds llama.cpp"),
    "nortune.browser": (("check_page",), "starts a browser"),
}
# Launched training ranks are Python processes that inherit PYTHONPATH: their Trainer.train raises too.


class HeavyWorkInFastLane(RuntimeError):
    """A test in the fast lane reached work that belongs in the slow lane."""


def _refuse(name: str, what: str):
    def refused(*args, **kwargs):
        raise HeavyWorkInFastLane(f"{name} {what}: the fast lane runs none of that; mark the test "
                                  "@pytest.mark.slow (see tests/README.md)")
    return refused


def patch(module) -> None:
    targets, what = HEAVY[module.__name__]
    for target in targets:
        owner = module
        *path, attribute = target.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, attribute, _refuse(f"{module.__name__}.{target}", what))


class _PatchOnImport(importlib.abc.MetaPathFinder):
    fast_lane_guard = True  # one per process, whether loaded as sitecustomize or by the conftest

    def find_spec(self, fullname, path, target=None):
        if fullname not in HEAVY:
            return None
        for finder in sys.meta_path:
            if getattr(finder, "fast_lane_guard", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                run = spec.loader.exec_module

                def exec_module(module, run=run):
                    run(module)
                    patch(module)
                spec.loader.exec_module = exec_module
                return spec
        return None


def install() -> None:
    """Guard this process: patch what is already imported, and the rest as it is imported."""
    if not any(getattr(finder, "fast_lane_guard", False) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
    for name in HEAVY:
        if name in sys.modules:
            patch(sys.modules[name])


install()
