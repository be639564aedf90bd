"""Export pieces that need no llama.cpp: config, type names, windows, Modelfile, tokenizer.model, card."""

import pytest

from conftest import REPO, tiny_tokenizer, write_manifest
from nortune.config import ConfigError, load_recipe
from nortune.config.export import check_types
from nortune.export.formats import gguf_path
from nortune.export.merge import ExportInputError, train_inputs
from nortune.export.modelfile import U1, derive_turns, go_template, modelfile
from nortune.export.verify import markdown_table, windows_of


def _recipe(tmp_path, **export):
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "runs_dir": str(tmp_path / "runs"), "export": export}))
    return load_recipe(path)


def test_defaults_follow_the_issue_thresholds(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    export = _recipe(tmp_path).export
    assert export.gguf_types == ["Q8_0", "Q4_K_M"]
    assert export.verify.thresholds["Q8_0"].min_top1 == 0.99
    assert export.verify.thresholds["Q8_0"].ppl_tolerance == 0.01
    assert export.verify.thresholds["Q4_K_M"].ppl_tolerance == 0.05


@pytest.mark.parametrize("bad, where", [
    ({"gguf_types": ["Q4_K_X"]}, "export.gguf_types: unknown llama.cpp type"),
    ({"gguf_types": ["IQ2_XS"]}, "importance matrix"),
    ({"gguf_types": ["Q8_0"]}, "modelfile.gguf_type 'Q4_K_M' is not in gguf_types"),
    ({"colour": "red"}, "export.colour: unknown key"),
    ({"verify": {"text": "nope.txt"}}, "export.verify.text: file not found"),
])
def test_bad_export_settings_fail_early_with_the_key(tmp_path, monkeypatch, bad, where):
    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match=where.replace("(", r"\(").replace(")", r"\)")):
        _recipe(tmp_path, **bad)


def test_type_names_are_normalised_and_deduplicated():
    assert check_types(["q8_0", "Q4_K_M", "q4_k_m", "bf16"]) == ["Q8_0", "Q4_K_M", "BF16"]
    assert gguf_path(REPO, "demo", "Q4_K_M").name == "demo-Q4_K_M.gguf"


def test_windows_start_with_bos_and_stop_at_max_tokens():
    ids = list(range(10, 60))
    wins = windows_of(ids, bos=2, window=8, max_tokens=20)
    assert all(w[0] == 2 and len(w) <= 8 for w in wins)
    assert sum(len(w) - 1 for w in wins) == 20
    assert [i for w in wins for i in w[1:]] == ids[:20]


def test_missing_train_output_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    recipe = _recipe(tmp_path)
    with pytest.raises(ExportInputError, match=r"train/manifest.json is missing"):
        train_inputs(recipe)


def _render_from_turns(turns, conversation, generation):
    text = turns.start
    for message in conversation:
        if message["role"] == "user":
            text += turns.user_prefix + message["content"] + turns.user_suffix
        else:
            text += turns.model_prefix + message["content"] + turns.model_suffix
    return text + (turns.model_prefix if generation else "")


def test_turns_read_from_the_jinja_template_rebuild_it():
    tokenizer = tiny_tokenizer()
    turns = derive_turns(tokenizer)
    assert turns.user_prefix == "<start_of_turn>user\n" and turns.model_prefix == "<start_of_turn>model\n"
    assert turns.stops() == ["<end_of_turn>"]
    assert turns.system_joiner == "\n\n"  # Gemma folds the system message into the first user turn
    chat = [{"role": "user", "content": "Hei!"}, {"role": "assistant", "content": "Hei på deg."},
            {"role": "user", "content": "Korleis går det?"}]
    rendered = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert rendered == tokenizer.bos_token + _render_from_turns(turns, chat, True)


def test_modelfile_has_template_stops_and_parameters():
    text = modelfile("demo-Q4_K_M.gguf", tiny_tokenizer(), {"temperature": 1.0, "num_ctx": 4096}, "Svar kort.")
    assert "FROM ./demo-Q4_K_M.gguf" in text
    assert 'PARAMETER stop "<end_of_turn>"' in text and 'PARAMETER stop "<eos>"' in text
    assert "PARAMETER temperature 1.0" in text and "PARAMETER num_ctx 4096" in text
    assert 'SYSTEM """Svar kort."""' in text
    template = text.split('TEMPLATE """')[1].split('"""')[0]
    assert template.count("{{") == template.count("}}")
    assert "{{-" not in template  # trimming would eat the newlines after the turn markers
    assert U1 not in go_template(derive_turns(tiny_tokenizer()))


def test_sentencepiece_model_is_rebuilt_from_a_gguf_vocabulary(tmp_path):
    import gguf
    import sentencepiece as spm

    from nortune.export.gguf_files import sentencepiece_from_gguf

    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>"] + [f"<0x{i:02X}>" for i in range(256)] \
        + ["▁h", "ei", "▁hei", "å"]
    types = [3, 3, 3, 2, 4] + [6] * 256 + [1, 1, 1, 1]
    writer = gguf.GGUFWriter(str(tmp_path / "v.gguf"), "gemma3")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 261 + [-1.0, -2.0, -3.0, -4.0])
    writer.add_token_types(types)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    sentencepiece_from_gguf(tmp_path / "v.gguf", tmp_path / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    assert [sp.id_to_piece(i) for i in range(sp.get_piece_size())] == tokens
    assert sp.is_control(2) and sp.is_unknown(3) and sp.is_byte(10) and sp.bos_id() == 2
    assert sp.get_score(sp.piece_to_id("▁hei")) == -3.0


def test_verification_table_marks_failures():
    row = {"file": "m-Q4_K_M.gguf", "gguf_type": "Q4_K_M", "bytes": 3 * 2**20, "top1": 0.9, "ppl_hf": 10.0,
           "ppl_gguf": 11.0, "ppl_ratio": 1.1, "tokenizer_match": 1.0, "passed": False,
           "reasons": ["perplexity ratio 1.1000 is off by more than 5.00%"]}
    table = markdown_table([row, {**row, "file": "m-Q8_0.gguf", "passed": True, "reasons": []}])
    assert "FAILED: perplexity ratio" in table and "| passed |" in table and "3.0 MiB" in table


def test_model_card_reports_what_the_run_folder_holds(tmp_path, monkeypatch):
    from nortune.export.card import model_card

    monkeypatch.chdir(REPO)
    recipe = _recipe(tmp_path)
    run = recipe.run_dir
    for stage, manifest in {
        "train": {"metrics": {"trainable_params": 307200, "total_params": 268098176, "steps": 30,
                              "first_loss": 3.5, "last_loss": 3.3}},
        "curate": {"metrics": {"by_bucket": {"nb": 67, "nn": 31, "en": 2}}},
        "decontam": {"metrics": {"passed": True, "contaminated_records": 0, "records": 100, "test_texts": 46,
                                 "hits_exact": 0, "hits_char_50gram": 0}},
    }.items():
        write_manifest(run / stage, stage, **manifest)
    from nortune.runs import RunLayout

    compare = RunLayout.of(recipe).compare_dir("tuned")  # where evaluate writes tuned vs base
    compare.mkdir(parents=True)
    (compare / "compare.md").write_text("| task | base | tuned |\n|---|---|---|\n| x | 1 | 2 |")
    card = model_card(recipe, [], {"Q8_0": "t-Q8_0.gguf"}, {"pissa": True, "checked_modules": 8,
                                                             "max_relative_weight_error": 1e-7}, "TABLE")
    assert "307,200 (0.1146 % of 268,098,176)" in card
    assert "| nb | 67 | 67.0 % |" in card and "| nn | 31 | 31.0 % |" in card
    assert "passed: 0 contaminated of 100" in card
    assert "| x | 1 | 2 |" in card and "TABLE" in card and "license: apache-2.0" in card


def test_toolchain_check_does_not_install(tmp_path, monkeypatch):
    from nortune.export import toolchain

    monkeypatch.setenv("NORTUNE_CACHE", str(tmp_path))
    with pytest.raises(toolchain.ToolchainError, match="not set up"):
        toolchain.ensure(install=False)
    assert not any(tmp_path.iterdir())
