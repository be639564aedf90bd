"""Issue 40: what nortune ships (model card, Modelfile, GGUF paths) and what it trains on cannot be
tampered with, each case as an attacker would try it, through the real CLI where the CLI is the way in.

Every test here failed on 8d3b095, where the injected value reached the shipped file, the path or
the training data.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LICENSE_PAYLOAD = ("apache-2.0\nbase_model: evil/model\n---\n<img src=x onerror=alert(1)>\n"
                   "[lic](javascript:alert(2))")


def nortune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nortune.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def recipe_file(tmp_path: Path, export: dict, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"name": "t", "runs_dir": str(tmp_path / "runs"), "export": export}),
                    encoding="utf-8")
    return path


def refused_naming(done: subprocess.CompletedProcess, key: str) -> str:
    """The run is refused with exit 2 and one line that names ``key``, no traceback."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stdout[-800:], done.stderr[-800:])
    assert "Traceback" not in done.stderr
    assert any(key in line for line in lines), done.stderr
    return done.stderr


@pytest.mark.parametrize("export, key", [
    ({"card": {"license": LICENSE_PAYLOAD}}, "export.card.license"),
    ({"card": {"language": ["nb", "nn\n| injected | row |"]}}, "export.card.language"),
    ({"modelfile": {"system": 'Svar kort."""\nADAPTER /tmp/evil.gguf\nPARAMETER num_ctx 1\nSYSTEM """x'}},
     "export.modelfile.system"),
    ({"modelfile": {"parameters": {"temperature 1\nADAPTER /tmp/evil.gguf\nPARAMETER num_ctx": 1}}},
     "export.modelfile.parameters"),
    ({"modelfile": {"parameters": {"stop": "<end>\nADAPTER /tmp/evil.gguf"}}}, "export.modelfile.parameters"),
    ({"card": {"model_name": "../../../victims/trav"}}, "export.card.model_name"),
])
def test_a_recipe_value_that_would_inject_into_a_shipped_file_is_refused_at_load(tmp_path, export, key):
    refused_naming(nortune("export", str(recipe_file(tmp_path, export))), key)
    assert not (tmp_path / "runs" / "t" / "export").exists()


def test_the_card_front_matter_is_yaml_written_by_huggingface_hub(tmp_path, monkeypatch):
    """Even with a value that slipped past the recipe's checks, the card's metadata is that one value."""
    from huggingface_hub import ModelCard

    from nortune.config import load_recipe
    from nortune.export.card import model_card

    monkeypatch.chdir(REPO)
    recipe = load_recipe(recipe_file(tmp_path, {}))
    source = str(tmp_path / "base\n---\nlicense: mit\n<img src=x onerror=alert(1)>")
    recipe = recipe.model_copy(update={"model": recipe.model.model_copy(update={"source": source})})
    card_section = recipe.export.card.model_construct(license=LICENSE_PAYLOAD, language=["nb", "nn\n- evil"],
                                                      model_name=None)
    recipe = recipe.model_copy(update={"export": recipe.export.model_copy(update={"card": card_section})})
    text = model_card(recipe, [], {}, {}, "no table")
    path = tmp_path / "README.md"
    path.write_text(text, encoding="utf-8")
    data = ModelCard.load(path).data.to_dict()
    assert data["license"] == LICENSE_PAYLOAD
    assert data["language"] == ["nb", "nn\n- evil"]
    assert data["base_model"] == source
    import markdown

    html = markdown.markdown(text.split("\n---\n", 2)[-1], extensions=["tables"])  # the body, as a page shows it
    assert "<img" not in html and "<a " not in html  # no live image, no link (javascript: or any)


def test_the_modelfile_writer_refuses_what_would_end_a_block_or_add_a_line():
    from conftest import tiny_tokenizer
    from nortune.export.modelfile import TemplateError, modelfile

    tokenizer = tiny_tokenizer()
    with pytest.raises(TemplateError, match="SYSTEM"):
        modelfile("m-Q4_K_M.gguf", tokenizer, {}, 'x"""\nADAPTER /tmp/evil.gguf\nSYSTEM """y')
    with pytest.raises(TemplateError, match="not a parameter Ollama knows"):
        modelfile("m-Q4_K_M.gguf", tokenizer, {"num_ctx 1\nADAPTER /tmp/evil.gguf\nPARAMETER top_k": 1}, None)
    with pytest.raises(TemplateError, match="control character"):
        modelfile("m-Q4_K_M.gguf", tokenizer, {"stop": "a\nADAPTER /tmp/evil.gguf"}, None)
    with pytest.raises(TemplateError, match="plain file name"):
        modelfile("../../x.gguf", tokenizer, {}, None)
    text = modelfile("m-Q4_K_M.gguf", tokenizer, {"stop": 'say "hi"', "num_ctx": 4096}, "Svar kort.")
    directives = [line.split()[0] for line in text.splitlines() if line and not line.startswith("#")
                  and line.split()[0].isupper()]
    assert "ADAPTER" not in directives and directives.count("SYSTEM") == 1
    assert 'PARAMETER stop "say \\"hi\\""' in text


def test_a_gguf_path_stays_in_the_export_folder(tmp_path):
    from nortune.export.formats import gguf_path

    assert gguf_path(tmp_path, "demo", "Q4_K_M") == tmp_path / "demo-Q4_K_M.gguf"
    for name in ("../../../victims/trav", "/etc/passwd", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="would leave"):
            gguf_path(tmp_path, name, "Q8_0")


# ---- 4. the training gate proves the contamination report it reads ------------------------------------
COPIED = "Hvor legger man vanligvis fra seg de våte støvlene etter en lang tur i fjellet?"  # a noreval_mini question
FIXTURES = REPO / "tests" / "fixtures"


def chats(path: Path, pairs: list[tuple[str, str]]) -> Path:
    import json

    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": u},
                                                     {"role": "assistant", "content": a}]}, ensure_ascii=False) + "\n"
                            for u, a in pairs), encoding="utf-8")
    return path


@pytest.mark.slow  # runs stages to the end through the CLI
def test_an_edited_or_malformed_contamination_record_does_not_open_the_training_gate(tmp_path, tiny_gemma3):
    import json

    from conftest import write_recipe

    data = chats(tmp_path / "train.jsonl", [("Skriv et kort dikt om høsten i Bergen.", "Regnet faller mykt."),
                                            (COPIED, "I gangen, selvfølgelig.")])
    recipe = str(write_recipe(tmp_path / "r.yaml", tiny_gemma3, tmp_path / "runs", train={"data": str(data)},
                              evaluate={"source": "local", "data_dir": str(FIXTURES / "noreval_mini")}))
    decontam = tmp_path / "runs" / "tiny" / "decontam"
    assert nortune("decontam", recipe).returncode in (0, 1)
    assert "1 contaminated training records" in refused_naming(nortune("train", recipe), "contamination gate")
    report_path, manifest_path = decontam / "contamination.json", decontam / "manifest.json"
    honest_report, honest_manifest = report_path.read_text(encoding="utf-8"), manifest_path.read_text(encoding="utf-8")

    report = json.loads(honest_report)
    report["training"]["contaminated_records"] = 0
    report["gate"].update(passed=True, contaminated_records=0)
    report_path.write_text(json.dumps(report), encoding="utf-8")
    assert "cannot be trusted" in refused_naming(nortune("train", recipe), "contamination.json")

    report_path.write_text(honest_report, encoding="utf-8")
    for key in ("outputs", "fingerprint"):
        manifest = json.loads(honest_manifest)
        manifest[key] = [1]
        manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
        refused_naming(nortune("train", recipe), f"decontam/manifest.json: {key}: ")
    assert not (tmp_path / "runs" / "tiny" / "train" / "adapter").exists()


# ---- 5. single-stage commands refuse curated data made for another recipe or other sources -------------
@pytest.mark.slow  # runs stages to the end through the CLI
def test_stale_curated_data_is_refused_by_decontam_and_train(tmp_path, tiny_gemma3):
    import shutil

    from conftest import write_recipe

    source = tmp_path / "mixed.jsonl"
    shutil.copy(FIXTURES / "curate" / "mixed.jsonl", source)
    recipe = str(write_recipe(tmp_path / "r.yaml", tiny_gemma3, tmp_path / "runs", train={"data": None},
                              evaluate={"source": "local", "data_dir": str(FIXTURES / "noreval_mini")},
                              curate={"sources": [{"name": "a", "path": str(source)}], "shares": {"nb": 1.0}}))
    assert nortune("curate", recipe).returncode == 0
    curated = tmp_path / "runs" / "tiny" / "curate" / "train.jsonl"
    before = curated.read_bytes()

    for command in ("decontam", "train"):
        out = refused_naming(nortune(command, recipe, "curate.seed=7"), "stale")
        assert "changed: curate" in out and "nortune curate" in out
    with source.open("a", encoding="utf-8") as handle:
        handle.write(source.read_text(encoding="utf-8").splitlines()[0].replace("Oslo", "Bergen") + "\n")
    for command in ("decontam", "train"):
        assert "changed: inputs" in refused_naming(nortune(command, recipe), "stale")
    assert curated.read_bytes() == before
    dry = nortune("run", recipe, "--dry-run")
    assert "curate" in dry.stdout + dry.stderr and "changed since the last run: inputs" in dry.stdout + dry.stderr


# ---- 6. what workers hand each other through the run folder can neither run code nor redirect writes ------
class _Planter:
    """Another process with write access to the run folder, as fast as it can be: in every folder that
    appears under ``root``, it plants links named like the workers' files (pointing at victim files) and
    swaps in a pickle that runs code when it is loaded."""

    def __init__(self, root: Path, names: list[str], victims: Path, marker: Path) -> None:
        import pickle
        import threading

        class Payload:
            def __reduce__(self):
                return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

        self.root, self.names, self.victims = root, names, victims
        self.payload = pickle.dumps(Payload())
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._plant, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def _plant(self) -> None:
        import os

        seen: set[Path] = set()
        while not self.stop.is_set():
            for folder, dirs, files in os.walk(self.root):
                here = Path(folder)
                if "index.pkl" in files and (here / "index.pkl").read_bytes() != self.payload:
                    swap = here / ".swap"
                    swap.write_bytes(self.payload)
                    os.replace(swap, here / "index.pkl")
                if here in seen:
                    continue
                seen.add(here)
                for name in self.names:
                    try:
                        (here / name).symlink_to(self.victims / name)
                    except OSError:
                        pass


def _victims(folder: Path, names: list[str]) -> dict[str, bytes]:
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(f"victim {name}\n".encode())
    return {name: (folder / name).read_bytes() for name in names}


@pytest.mark.slow  # runs stages to the end through the CLI
def test_planted_links_and_a_swapped_pickle_change_nothing_outside_and_run_nothing(tmp_path):
    import shutil

    source = tmp_path / "mixed.jsonl"
    shutil.copy(FIXTURES / "curate" / "mixed.jsonl", source)
    recipe = str(recipe_file(tmp_path, {}))
    tree = yaml.safe_load(Path(recipe).read_text(encoding="utf-8"))
    tree.update(evaluate={"source": "local", "data_dir": str(FIXTURES / "noreval_mini")},
                curate={"sources": [{"name": "a", "path": str(source)}], "shares": {"nb": 1.0},
                        "executor": {"type": "local", "workers": 2}})
    Path(recipe).write_text(yaml.safe_dump(tree), encoding="utf-8")
    names = [f"{rank:05d}.{ext}" for rank in (0, 1) for ext in ("jsonl", "idx", "part", "part.json", "clean")]
    victims, marker = tmp_path / "victims", tmp_path / "code-ran"
    before = _victims(victims, names)
    run = tmp_path / "runs" / "t"

    with _Planter(run / "curate", names, victims, marker):
        curate = nortune("curate", recipe)
    if curate.returncode != 0:  # the planted links stopped it: one line, then a rerun without them works
        refused_naming(curate, "already exists as a link")
        assert nortune("curate", recipe).returncode == 0
    with _Planter(run / "decontam", names, victims, marker):
        decontam = nortune("decontam", recipe)
    if decontam.returncode != 0:
        refused_naming(decontam, "already exists as a link")

    assert not marker.exists(), "a pickle swapped into the run folder ran code"
    assert {name: (victims / name).read_bytes() for name in names} == before


def test_no_pickle_is_loaded_from_a_file_nortune_does_not_create_itself():
    """`pickle.load(s)` only in the llama.cpp child runner, which reads files in a private temporary folder."""
    import ast

    callers = set()
    for path in (REPO / "src" / "nortune").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("load", "loads", "Unpickler") and \
                    isinstance(node.value, ast.Name) and node.value.id in ("pickle", "dill", "cloudpickle"):
                callers.add(str(path.relative_to(REPO / "src" / "nortune")))
    assert callers == {"export/native.py"}


@pytest.mark.slow
def test_a_model_trained_for_another_recipe_is_refused_by_evaluate_export_and_preference(tmp_path, tiny_gemma3):
    from conftest import write_recipe

    recipe = str(write_recipe(tmp_path / "r.yaml", tiny_gemma3, tmp_path / "runs",
                              train={"data": str(FIXTURES / "chat_tiny.jsonl")},
                              evaluate={"source": "local", "data_dir": str(REPO / "data" / "demo" / "noreval")}))
    assert nortune("train", recipe, "--allow-contaminated", "a test of staleness, not of data").returncode == 0
    for command in ("evaluate", "export"):
        out = refused_naming(nortune(command, recipe, "train.lr=0.001"), "stale")
        assert "changed: recipe" in out and "recipe.resolved.yaml" in out
    data = tmp_path / "more.jsonl"
    data.write_bytes((FIXTURES / "chat_tiny.jsonl").read_bytes() * 2)
    assert "changed: inputs" in refused_naming(nortune("evaluate", recipe, f"train.data={data}"), "stale")
