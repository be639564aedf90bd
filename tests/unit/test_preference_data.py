import json

import pytest

from nortune.jsonl import DataError
from nortune.preference.data import normalise_pairs

GOOD = {"prompt": "Kva er hovudstaden i Noreg?", "chosen": "Oslo er hovudstaden.", "rejected": "Bergen."}


def _write(tmp_path, rows):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return path


def test_malformed_pairs_are_named_and_counted(tmp_path):
    rows = [GOOD, {"prompt": "Hei", "chosen": "Hallo"}, {**GOOD, "rejected": GOOD["chosen"]},
            {**GOOD, "chosen": [{"role": "assistant", "content": " "}]}, GOOD]
    report = normalise_pairs(_write(tmp_path, rows), tmp_path / "out.jsonl")
    assert report.used == 2 and report.records == 5
    assert report.dropped == {"missing_field:rejected": 1, "identical_chosen_rejected": 1, "empty_response": 1}
    assert report.dropped_lines == {"missing_field:rejected": [2], "identical_chosen_rejected": [3],
                                    "empty_response": [4]}
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out[0]["prompt"] == [{"role": "user", "content": GOOD["prompt"]}]
    assert out[0]["chosen"] == [{"role": "assistant", "content": GOOD["chosen"]}]
    assert "| dropped because |" in report.markdown()


def test_structural_errors_name_file_and_line(tmp_path):
    with pytest.raises(DataError, match=r"pairs.jsonl:2: malformed JSON"):
        normalise_pairs(_write(tmp_path, [GOOD, "{oops"]), tmp_path / "out.jsonl")
    with pytest.raises(DataError, match=r"pairs.jsonl:1: chosen: messages\[0\].role"):
        normalise_pairs(_write(tmp_path, [{**GOOD, "chosen": [{"role": "bot", "content": "x"}]}]),
                        tmp_path / "out.jsonl")
    with pytest.raises(DataError, match="no usable preference pairs"):
        normalise_pairs(_write(tmp_path, [{"prompt": "x"}]), tmp_path / "out.jsonl")
