"""Language identification: labels, confidences, the CLI's TSV output."""

from __future__ import annotations

import json

import pytest

from nortune.cli import main
from nortune.curate.langid import default_model

CASES = [
    ("Jeg vet ikke hva jeg skal gjøre med dette nå, men jeg prøver.", "nb"),
    ("Eg veit ikkje kva eg skal gjere med dette no, men eg prøver.", "nn"),
    ("Hvordan kan vi hjelpe deg med søknaden din i morgen?", "nb"),
    ("Korleis kan vi hjelpe deg med søknaden din i morgon?", "nn"),
    ("I do not know what to do with this right now, but I will try.", "en"),
    ("Jag vet inte vad jag ska göra med det här nu, men jag försöker.", "other"),
    ("Ich weiß nicht, was ich jetzt damit machen soll.", "other"),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_labels(text, expected):
    label, confidence = default_model().predict(text)
    assert label == expected
    assert 0.5 <= confidence <= 1.0


def test_no_words_is_other_with_zero_confidence():
    assert default_model().predict("1234 !!! ...") == ("other", 0.0)


def test_cli_plain_text(tmp_path, capsys):
    path = tmp_path / "in.txt"
    path.write_text("Eg veit ikkje kva eg skal gjere no.\n\nJeg vet ikke hva jeg skal gjøre nå.\n", encoding="utf-8")
    assert main(["langid", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # one line per input line, blank ones included
    assert [line.split("\t")[0] for line in lines] == ["nn", "other", "nb"]
    assert all(0.0 <= float(line.split("\t")[1]) <= 1.0 for line in lines)


def test_cli_jsonl_field(tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    rows = [{"text": "Kva tid kjem toget frå Bergen i kveld?"}, {"text": "What time does the train arrive?"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    assert main(["langid", str(path), "--field", "text"]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == ["nn", "en"]


def test_cli_jsonl_malformed_names_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok tekst her"}\n{not json\n', encoding="utf-8")
    assert main(["langid", str(path), "--field", "text"]) == 2
    assert f"{path}:2" in capsys.readouterr().err
