"""The shape docs/architecture.md promises, read from the source: no circle, no stage reaching up,
one stage list, plain imports in the pipeline."""

import ast
from pathlib import Path

from nortune.runs import STAGE_FOLDERS

SRC = Path(__file__).resolve().parents[2] / "src"
# The stage packages/modules in pipeline order (the three evaluate stages are one package).
STAGE_MODULES = ["curate", "decontam", "plan", "train", "preference", "evaluate", "export", "report"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """{module: nortune modules it imports anywhere in the file (lazy imports inside functions too)}."""
    modules = {_module_name(p): p for p in (SRC / "nortune").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # ``from pkg import sub`` imports the module pkg.sub; ``from mod import name`` imports mod
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def _stage_of(module: str) -> int | None:
    parts = module.split(".")
    return STAGE_MODULES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGE_MODULES else None


def test_the_import_graph_has_no_circle():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_stage_imports_a_stage_that_runs_after_it():
    reaching_up = sorted(f"{module} -> {target}" for module, targets in _imports().items()
                         for target in targets
                         if _stage_of(module) is not None and _stage_of(target) is not None
                         and _stage_of(target) > _stage_of(module))
    assert not reaching_up, reaching_up


def test_the_pipeline_runs_the_one_stage_list_through_plain_imports():
    from nortune import pipeline

    assert [s.name for s in pipeline.STAGES] == list(STAGE_FOLDERS)
    imported = _imports()["nortune.pipeline"]
    assert {f"nortune.{m}" for m in STAGE_MODULES} <= imported
    assert "importlib" not in (SRC / "nortune" / "pipeline.py").read_text()


def test_every_stage_module_exposes_the_contract():
    import importlib
    import inspect

    for name in STAGE_MODULES:
        module = importlib.import_module(f"nortune.{name}")
        for function in ("fingerprint", "run"):
            assert callable(getattr(module, function, None)), f"nortune.{name}.{function} is missing"
        params = list(inspect.signature(module.run).parameters)
        assert params[:2] == ["recipe", "options"], f"nortune.{name}.run{tuple(params)}"


def test_no_path_in_the_run_folder_is_spelled_outside_the_layout():
    """``run_dir / "train"`` and friends belong to runs.RunLayout; stages ask it."""
    import re

    folders = "|".join(sorted({f.split("/")[0] for f in STAGE_FOLDERS.values()}))
    spelled = re.compile(rf"run_dir\s*/\s*[\"'](?:{folders})[\"']")
    found = sorted(str(p.relative_to(SRC)) for p in (SRC / "nortune").rglob("*.py")
                   if p.name != "runs.py" and spelled.search(p.read_text(encoding="utf-8")))
    assert not found, found
