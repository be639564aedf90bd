"""Chat-template mode and the eval card on the tiny Gemma 3 (its tokenizer has Gemma's chat template),
and the refusal to compare evaluations whose cards differ (issue 18, parts 3 and 4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, write_recipe

pytestmark = pytest.mark.slow
DEMO_DATA = REPO / "data" / "demo" / "noreval"
FAMILIES = ["noropenbookqa_nob", "nrk_quiz_qa_nob"]


def _evaluate(tmp_path: Path, model: Path, name: str, *extra: str, data: Path = DEMO_DATA, **evaluate) -> Path:
    """`nortune evaluate --model base` on a small recipe; returns the evaluate/base folder."""
    from nortune.cli import main

    settings = {"source": "local", "data_dir": str(data), "tasks": FAMILIES, "prompts": ["p0"], "limit": 2,
                "num_fewshot": {"noropenbookqa_nob": 2}, "batch_tokens": 64, "bootstrap_samples": 100, **evaluate}
    recipe = write_recipe(tmp_path / f"{name}.yaml", model, tmp_path / "runs", evaluate=settings)
    (tmp_path / f"{name}.yaml").write_text((tmp_path / f"{name}.yaml").read_text().replace("name: tiny",
                                                                                             f"name: {name}"))
    assert main(["evaluate", str(recipe), "--model", "base", *extra]) == 0
    return tmp_path / "runs" / name / "evaluate" / "base"


def _contexts(folder: Path) -> dict[tuple[str, int], str]:
    rows = [json.loads(line) for line in (folder / "samples.jsonl").open()]
    return {(r["task"], r["doc_id"]): r["context"] for r in rows}


def _card(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())["nortune"]["card"]


@pytest.fixture(scope="module")
def evaluated(tiny_gemma3, tmp_path_factory):
    """One evaluation per chat mode (off, on) and one with auto on a model whose name says -it."""
    tmp = tmp_path_factory.mktemp("card")
    instruct = tmp / "tiny-gemma-it"
    instruct.symlink_to(tiny_gemma3, target_is_directory=True)
    return {"tmp": tmp, "model": tiny_gemma3,
            "off": _evaluate(tmp, tiny_gemma3, "plain", chat_template="off"),
            "on": _evaluate(tmp, tiny_gemma3, "chat", chat_template="on"),
            "auto_it": _evaluate(tmp, instruct, "auto_it")}


def test_both_chat_modes_run_and_give_different_prompts(evaluated):
    from nortune.report.ledger import format_runs, summarize

    plain, chat = _contexts(evaluated["off"]), _contexts(evaluated["on"])
    assert plain.keys() == chat.keys() and len(plain) == 4  # 2 tasks x 2 items
    for key in plain:
        assert plain[key] != chat[key]
        assert "<start_of_turn>" not in plain[key]
        assert chat[key].count("<start_of_turn>user\n") >= 1 and chat[key].endswith("<start_of_turn>model\n")
    # 2-shot open-book QA as turns: two earlier question/answer pairs, then the question
    obqa = chat[("noropenbookqa_nob_p0", 0)]
    assert obqa.count("<start_of_turn>user\n") == 3 and obqa.count("<start_of_turn>model\n") == 3
    for mode in ("off", "on"):
        results = json.loads((evaluated[mode] / "results.json").read_text())
        assert results["nortune"]["card"]["chat"]["applied"] is (mode == "on")
        report = (evaluated[mode] / "report.md").read_text()
        assert f"chat template {mode}" in report and "## Eval card" in report
        manifest = json.loads((evaluated[mode] / "manifest.json").read_text())
        assert manifest["metrics"]["chat_template"].startswith(f"chat template {mode}")
        # the run's ledger line (nortune runs, the run report) says it too
        summary = summarize(evaluated[mode].parent.parent)
        assert summary.chat_template == manifest["metrics"]["chat_template"]
        assert f"(chat {mode})" in format_runs([summary])


def test_auto_is_on_for_an_instruct_name_and_off_for_a_base_name(evaluated, tiny_gemma3):
    from nortune.evaluate.chat_mode import looks_instruct

    chat = _card(evaluated["auto_it"])["chat"]
    assert chat["setting"] == "auto" and chat["applied"] and chat["fewshot_as_multiturn"]
    assert chat["template_sha256"] == _card(evaluated["on"])["chat"]["template_sha256"] is not None
    assert _contexts(evaluated["auto_it"]) == _contexts(evaluated["on"])
    assert not looks_instruct(str(tiny_gemma3))  # the same folder under its own name: a base model


def test_chat_on_without_a_template_is_one_line_before_scoring(tiny_gemma3, tmp_path, capsys):
    from nortune.cli import main

    bare = tmp_path / "bare"
    shutil.copytree(tiny_gemma3, bare)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    for extra in ("chat_template.jinja", "chat_template.json"):
        (bare / extra).unlink(missing_ok=True)
    recipe = write_recipe(tmp_path / "r.yaml", bare, tmp_path / "runs", evaluate={
        "source": "local", "data_dir": str(DEMO_DATA), "tasks": ["nrk_quiz_qa_nob"], "prompts": ["p0"],
        "limit": 1, "chat_template": "on"})
    assert main(["evaluate", str(recipe), "--model", "base"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("nortune: ") and "evaluate.chat_template: on" in err[-1] and "no chat template" in err[-1]
    assert not (tmp_path / "runs" / "tiny" / "evaluate" / "base" / "samples.jsonl").exists()
    # the same mistake under `nortune run` is the same one line and exit 2 (issue 42's error contract)
    assert main(["run", str(recipe), "--only", "evaluate-base"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == err[-1]


def test_chat_prompts_share_prefixes_and_equal_lm_eval_hf(tiny_gemma3, monkeypatch):
    """Under the chat template the nortune backend still groups each item's choices under one context,
    and scores them exactly as lm-eval's `hf` does."""
    import lm_eval

    from nortune.evaluate import backend
    from nortune.evaluate.tasks import build_tasks, task_specs

    class Settings:
        families, prompts, source, data_dir, revision, extra_tasks = FAMILIES, ["p0", "p2"], "local", DEMO_DATA, None, []

    groups = []
    real = backend.plan_batches
    monkeypatch.setattr(backend, "plan_batches", lambda g, *a, **k: groups.extend(g) or real(g, *a, **k))
    runs = {}
    for model in ("nortune", "hf"):
        tasks = build_tasks(task_specs(Settings, {"noropenbookqa_nob": 1})[0])
        runs[model] = lm_eval.simple_evaluate(
            model=model, model_args={"pretrained": str(tiny_gemma3), "dtype": "float32", "device": "cpu"},
            tasks=list(tasks.values()), log_samples=True, batch_size=1 if model == "nortune" else 4, limit=3,
            fewshot_random_seed=1234, apply_chat_template=True, fewshot_as_multiturn=True)
    docs = sum(len(rows) for rows in runs["hf"]["samples"].values())
    assert len(groups) == docs  # one context per item (each prompt's items have their own)
    assert all(len(g.members) == len(runs["hf"]["samples"]["nrk_quiz_qa_nob_p0"][0]["arguments"])
               for g in groups if g.context == groups[0].context)
    compared = 0
    for task, rows in runs["hf"]["samples"].items():
        ours = {r["doc_id"]: r for r in runs["nortune"]["samples"][task]}
        for row in rows:
            assert "<start_of_turn>model\n" in row["arguments"][0][0]
            assert ours[row["doc_id"]]["arguments"] == row["arguments"]
            for (a,), (b,) in zip(row["resps"], ours[row["doc_id"]]["resps"]):
                assert b[0] == pytest.approx(a[0], abs=1e-4) and b[1] == a[1]
                compared += 1
    assert compared == sum(len(g.members) for g in groups)


def test_card_has_every_field(evaluated):
    card = _card(evaluated["off"])
    assert card["lm_eval"] == __import__("importlib.metadata").metadata.version("lm_eval")
    assert set(card["tasks"]) == {"noropenbookqa_nob_p0", "nrk_quiz_qa_nob_p0"}
    obqa, quiz = card["tasks"]["noropenbookqa_nob_p0"], card["tasks"]["nrk_quiz_qa_nob_p0"]
    for task in (obqa, quiz):
        assert task["version"] is not None and len(task["config_sha256"]) == 64 and len(task["docs_sha256"]) == 64
    assert obqa["num_fewshot"] == 2 and len(obqa["fewshot_docs_sha256"]) == 64
    assert quiz["num_fewshot"] == 0 and quiz["fewshot_docs_sha256"] is None
    assert obqa["n_docs"] == 20 and quiz["n_docs"] == 20  # the whole split is hashed; limit is separate
    data = card["data"]
    assert data["source"] == "local" and data["data_dir"] == str(DEMO_DATA.resolve())
    assert set(data["files"]) == {"noropenbookqa/nb/test.jsonl", "noropenbookqa/nb/train.jsonl",
                                  "nrk_quiz_qa/nb/test.jsonl"}
    assert card["chat"]["applied"] is False and card["chat"]["setting"] == "off"
    assert card["fewshot_seed"] == 1234 and card["limit"] == 2
    assert card["backend"] == "nortune" and card["dtype"] == "float32"
    # a second evaluation of the same settings gives the same card (hashes stable across processes)
    assert _card(evaluated["auto_it"])["tasks"] == card["tasks"]


def test_card_changes_with_task_yaml_data_and_limit(evaluated, monkeypatch):
    from nortune.evaluate import card as card_module
    from nortune.evaluate import tasks as tasks_module

    tmp, model, before = evaluated["tmp"], evaluated["model"], _card(evaluated["off"])
    # data: one answer changed in a row beyond the limit: still another data set
    data = tmp / "data"
    shutil.copytree(DEMO_DATA, data)
    path = data / "nrk_quiz_qa" / "nb" / "test.jsonl"
    rows = path.read_text().splitlines()
    last = json.loads(rows[-1])
    last["question"] += " (endret)"
    path.write_text("\n".join(rows[:-1] + [json.dumps(last, ensure_ascii=False)]) + "\n")
    changed = _card(_evaluate(tmp, model, "data", data=data, chat_template="off"))
    assert changed["tasks"]["nrk_quiz_qa_nob_p0"]["docs_sha256"] != before["tasks"]["nrk_quiz_qa_nob_p0"]["docs_sha256"]
    assert changed["tasks"]["noropenbookqa_nob_p0"] == before["tasks"]["noropenbookqa_nob_p0"]
    assert changed["data"]["files"]["nrk_quiz_qa/nb/test.jsonl"] != before["data"]["files"]["nrk_quiz_qa/nb/test.jsonl"]
    assert card_module.differences(before, changed) == ["data (rows scored) of nrk_quiz_qa_nob_p0"]

    # limit
    limited = _card(_evaluate(tmp, model, "limit", chat_template="off", limit=1))
    assert card_module.differences(before, limited) == ["limit 2 vs 1"]

    # the task YAML: lm-eval's own noreval folder, copied, with one prompt's text changed
    import lm_eval
    from lm_eval.tasks import TaskManager

    yamls = tmp / "noreval"
    shutil.copytree(Path(lm_eval.__file__).parent / "tasks" / "noreval", yamls)
    prompt = next(yamls.rglob("nrk_quiz_qa_nob_p0.yaml"))
    prompt.write_text(prompt.read_text().replace("doc_to_text:", "description: \"Svar:\\n\"\ndoc_to_text:", 1))
    monkeypatch.setattr(tasks_module, "task_manager",
                        lambda everything=False: TaskManager(include_path=str(yamls), include_defaults=False))
    edited = _card(_evaluate(tmp, model, "yaml", chat_template="off"))
    assert card_module.differences(before, edited) == ["task config of nrk_quiz_qa_nob_p0"]
    # chat mode
    assert card_module.differences(before, _card(evaluated["on"])) == ["chat template off vs on"]


def test_evaluate_compare_refuses_other_settings_unless_forced(evaluated, capsys):
    from nortune.cli import main

    tmp = evaluated["tmp"]
    baseline = str(evaluated["off"] / "results.json")
    recipe = tmp / "chat.yaml"  # chat template on, compared with the chat-off evaluation
    assert main(["evaluate", str(recipe), "--model", "base", "--compare", baseline]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("nortune: not comparable") and "chat template off vs on" in err and "--force-compare" in err
    assert main(["evaluate", str(recipe), "--model", "base", "--compare", baseline, "--force-compare"]) == 0
    assert "FORCED COMPARISON" in capsys.readouterr().err
    compare = evaluated["on"] / "compare"
    assert (compare / "compare.md").read_text().startswith("> **FORCED COMPARISON (--force-compare)")
    assert "chat template off vs on" in json.loads((compare / "compare.json").read_text())["forced"][0]
    # a baseline written before cards: refused before anything is evaluated
    cardless = tmp / "cardless"
    shutil.copytree(evaluated["off"], cardless, ignore=shutil.ignore_patterns("cache", "compare"))
    results = json.loads((cardless / "results.json").read_text())
    del results["nortune"]["card"]
    (cardless / "results.json").write_text(json.dumps(results))
    fresh = tmp / "fresh.yaml"
    fresh.write_text(recipe.read_text().replace("name: chat", "name: fresh"))
    assert main(["evaluate", str(fresh), "--model", "base", "--compare", str(cardless)]) == 2
    assert "no eval card" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp / "runs" / "fresh").exists()
    # the same settings (chat on, same template) on another model: compared without a word about forcing
    assert main(["evaluate", str(recipe), "--model", "base", "--compare", str(evaluated["auto_it"])]) == 0
    assert "FORCED" not in capsys.readouterr().err
    assert not (compare / "compare.md").read_text().startswith("> **FORCED")


def _as_tuned_run(folder: Path, run: Path, card: dict | None) -> Path:
    """A run folder whose tuned evaluation is ``folder``'s, with ``card`` (None: written before cards)."""
    tuned = run / "evaluate" / "tuned"
    shutil.copytree(folder, tuned, ignore=shutil.ignore_patterns("cache", "compare"))
    results = json.loads((tuned / "results.json").read_text())
    if card is None:
        results["nortune"].pop("card")
    else:
        results["nortune"]["card"] = card
    (tuned / "results.json").write_text(json.dumps(results))
    return run


def test_nortune_compare_refuses_incomparable_runs_unless_forced(evaluated, tmp_path, capsys):
    from nortune.cli import main

    card = _card(evaluated["off"])
    same = _as_tuned_run(evaluated["off"], tmp_path / "a", card)
    twin = _as_tuned_run(evaluated["off"], tmp_path / "b", json.loads(json.dumps(card)))
    assert main(["compare", str(same), str(twin)]) == 0  # comparable runs still compare
    assert "FORCED" not in capsys.readouterr().out

    other = json.loads(json.dumps(card))
    other["tasks"]["nrk_quiz_qa_nob_p0"]["version"] = 2.0
    other["limit"] = None
    changed = _as_tuned_run(evaluated["off"], tmp_path / "c", other)
    assert main(["compare", str(same), str(changed)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("nortune: not comparable, refusing to compare: c vs a: task version of nrk_quiz_qa_nob_p0 "
                   "(1.0 vs 2.0); limit 2 vs none (pass --force to compare anyway)")
    html = tmp_path / "c.html"
    assert main(["compare", str(same), str(changed), "--force", "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("> **FORCED COMPARISON (--force): these results are not comparable: c vs a:")
    assert "| Open-book QA BM |" in out and "FORCED COMPARISON" in html.read_text()

    old = _as_tuned_run(evaluated["off"], tmp_path / "old", None)
    assert main(["compare", str(same), str(old)]) == 2
    assert "no eval card" in capsys.readouterr().err
    assert main(["compare", str(same), str(old), "--force"]) == 0
    assert "comparability unknown" in capsys.readouterr().out
