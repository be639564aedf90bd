"""config is a leaf (it imports nothing of nortune but nortune.errors), and each shared fact is
written once, in nortune.config.names: a second copy anywhere else in the code fails here."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nortune.config import names

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "nortune"
CONFIG = SRC / "config"
ALLOWED = ("nortune.config", "nortune.errors")


def _imported(path: Path) -> list[str]:
    """Every module an import statement in ``path`` names, at any depth (function-local ones too)."""
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append(f"nortune.config.{node.module or ''}" if node.level else node.module)
    return out


def test_config_imports_nothing_from_nortune_but_itself_and_errors():
    files = sorted(CONFIG.glob("*.py"))
    assert {"__init__.py", "base.py", "names.py"} <= {p.name for p in files}
    bad = [f"{p.name}: {module}" for p in files for module in _imported(p)
           if module.split(".")[0] == "nortune" and not module.startswith(ALLOWED)]
    assert bad == []


def test_names_needs_only_the_standard_library():
    assert set(_imported(CONFIG / "names.py")) <= {"__future__", "dataclasses", "pathlib"}


def test_loading_the_shipped_recipes_imports_no_other_part_of_nortune():
    """Catches what the scan cannot see (importlib strings, a validator's late import)."""
    code = ("import json, sys\nfrom pathlib import Path\nfrom nortune.config import load_recipe\n"
            "for path in sorted(Path('configs').glob('*.yaml')):\n    load_recipe(path)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'nortune')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert [m for m in loaded if m != "nortune" and not m.startswith(ALLOWED)] == []


def test_every_embedded_model_name_has_its_packaging_details():
    from nortune.models import EMBEDDED_MODELS

    assert set(EMBEDDED_MODELS) == set(names.EMBEDDED_MODEL_NAMES)


def _literals(path: Path):
    """(line, strings) for every list/tuple/set literal and every dict literal's keys, and each string."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            yield node.lineno, {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, {node.value}


def _copies(is_copy) -> list[str]:
    files = [p for p in [*SRC.rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")] if p != CONFIG / "names.py"]
    return [f"{p.relative_to(REPO)}:{line}" for p in files for line, strings in _literals(p) if is_copy(strings)]


FACTS = {
    # A family name as a string anywhere (the catalogue, the shots, a benchmark's default list).
    "noreval family": lambda s: bool(s & set(names.NOREVAL_FAMILIES)),
    "prompt list": lambda s: set(names.PROMPTS) <= s,
    "curate buckets": lambda s: set(names.CURATE_BUCKETS) <= s,
    # Six or more llama.cpp type names in one literal: the type table or the importance-matrix set
    # (the export defaults name five; the converter's own types are four).
    "GGUF type table": lambda s: len(s & set(names.QUANTIZER_FTYPES)) >= 6,
}


@pytest.mark.parametrize("fact", list(FACTS))
def test_shared_facts_are_written_once(fact):
    assert _copies(FACTS[fact]) == []


def test_the_embedded_model_name_is_written_once_in_the_package():
    spelled = {names.GEMMA3_270M, names.EMBEDDED_PREFIX + names.GEMMA3_270M}
    files = [p for p in SRC.rglob("*.py") if p != CONFIG / "names.py"]
    assert [f"{p.name}:{line}" for p in files for line, s in _literals(p) if s & spelled] == []


def test_the_check_sees_a_copy():
    """The scan is not blind: the facts' own module holds one of each."""
    assert all(any(FACTS[f](s) for _, s in _literals(CONFIG / "names.py")) for f in FACTS)
