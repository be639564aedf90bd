import json

import pytest

from conftest import tiny_tokenizer
from nortune.jsonl import DataError
from nortune.train.data import build_dataset, tokenize_record


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def _jsonl(tmp_path, lines):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


GOOD = {"messages": [{"role": "user", "content": "Hei"}, {"role": "assistant", "content": "Hallo!"}]}


@pytest.mark.parametrize("bad, message", [
    ('{"messages": [', "data.jsonl:2: malformed JSON"),
    ({"text": "hei"}, "data.jsonl:2: missing field 'messages'"),
    ({"messages": []}, "data.jsonl:2: 'messages' must be a non-empty list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "data.jsonl:2: messages[0].role: 'bot'"),
    ({"messages": [{"role": "user", "content": 3}]}, "data.jsonl:2: messages[0].content must be a string"),
    ([1, 2], "data.jsonl:2: expected a JSON object"),
])
def test_malformed_records_name_file_and_line(tmp_path, tokenizer, bad, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_dataset(_jsonl(tmp_path, [GOOD, bad]), tokenizer, 64)


def test_records_without_assistant_turn_are_counted_not_trained(tmp_path, tokenizer):
    no_answer = {"messages": [{"role": "user", "content": "Hei"}]}
    empty_answer = {"messages": [{"role": "user", "content": "Hei"}, {"role": "assistant", "content": "  "}]}
    dataset, report = build_dataset(_jsonl(tmp_path, [GOOD, no_answer, empty_answer, GOOD]), tokenizer, 64)
    assert len(dataset) == 2 and report.used == 2 and report.records == 4
    assert report.dropped == {"no_assistant_turn": 2}
    assert report.dropped_lines["no_assistant_turn"] == [2, 3]


def test_answers_cut_off_by_max_seq_len_are_counted(tmp_path, tokenizer):
    long_prompt = {"messages": [{"role": "user", "content": "Hva er " * 80}, {"role": "assistant", "content": "Ja."}]}
    _, report = build_dataset(_jsonl(tmp_path, [GOOD, long_prompt]), tokenizer, 32)
    assert report.dropped == {"no_assistant_tokens_within_max_seq_len": 1}


def test_no_usable_records_is_an_error(tmp_path, tokenizer):
    with pytest.raises(DataError, match="no usable training records"):
        build_dataset(_jsonl(tmp_path, [{"messages": [{"role": "user", "content": "Hei"}]}]), tokenizer, 64)


def test_loss_mask_covers_exactly_the_assistant_turns(tokenizer):
    messages = [{"role": "system", "content": "Svar kort."}, {"role": "user", "content": "Hva er to pluss tre?"},
                {"role": "assistant", "content": "Fem."}, {"role": "user", "content": "Og fire pluss fire?"},
                {"role": "assistant", "content": "Åtte."}]
    ids, mask, truncated = tokenize_record(tokenizer, messages, 512, "x")
    assert not truncated
    masked = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert masked == "Fem.<end_of_turn>\nÅtte.<end_of_turn>\n"
    unmasked = tokenizer.decode([i for i, m in zip(ids, mask) if not m])
    assert "Svar kort." in unmasked and "Fem." not in unmasked


def test_a_text_only_record_trains_on_its_text(tokenizer):
    messages = [{"role": "assistant", "content": "Bergen er kjend for regnet."}]
    ids, mask, _ = tokenize_record(tokenizer, messages, 512, "x")
    assert tokenizer.decode([i for i, m in zip(ids, mask) if m]) == "Bergen er kjend for regnet.<end_of_turn>\n"
