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


def test_posteriors_sum_to_one_and_nb_probability():
    model = default_model()
    post = model.posteriors("Eg veit ikkje kva eg skal gjere med dette no.")
    assert set(post) == set(model.classes)
    assert abs(sum(post.values()) - 1.0) < 1e-6
    assert model.nb_probability("Eg veit ikkje kva eg skal gjere med dette no.") < 0.5
    assert model.nb_probability("Jeg vet ikke hva jeg skal gjøre med dette nå.") > 0.5
    assert model.posteriors("") == {} and model.nb_probability("123") is None


@pytest.mark.parametrize("text,expected", [
    ("Korleis kan eg endre innstillingane for utskrift i programmet?", "nn"),
    ("Hvordan kan jeg endre innstillingene for utskrift i programmet?", "nb"),
    ("Ho fekk ikkje svar frå dei før fristen gjekk ut.", "nn"),
    ("Hun fikk ikke svar fra dem før fristen gikk ut.", "nb"),
])
def test_nb_vs_nn_markers(text, expected):
    p_nb = default_model().nb_probability(text)
    assert ("nb" if p_nb >= 0.5 else "nn") == expected


def test_hashing_is_position_independent_and_batch_consistent():
    from nortune.curate.langid import _codes, feature_indices, hash_words, normalise, word_hashes

    norm = normalise("Eg  veit, ikkje! 42 eg")
    assert norm == " eg veit ikkje eg "
    hashes = word_hashes(_codes(norm))
    assert hashes[0] == hashes[3]
    assert list(hash_words(["eg", "veit", "ikkje"])) == list(hashes[:3])
    idx, words = feature_indices(norm, 12)
    assert idx.min() >= 0 and idx.max() < 2 ** 12 and len(words) == 4
    again, _ = feature_indices(normalise("EG veit ikkje eg"), 12)
    assert list(idx) == list(again)  # same normalised text, same features


def test_lexicon_counts_only_one_standard_forms():
    from nortune.curate.langid import _codes, normalise, word_hashes

    lexicon = default_model().lexicon
    assert lexicon is not None
    nb, nn = lexicon.counts(word_hashes(_codes(normalise("ikkje korleis"))))
    assert nn >= 2 and nb == 0
    nb, nn = lexicon.counts(word_hashes(_codes(normalise("hva hvordan"))))
    assert nb >= 2 and nn == 0


def test_long_text_is_read_up_to_max_chars():
    from nortune.curate.langid import MAX_CHARS

    text = "Eg veit ikkje kva eg skal gjere. " * 200
    assert len(text) > MAX_CHARS
    assert default_model().predict(text)[0] == "nn"


def test_lexicon_counts_with_one_merged_table():
    from nortune.curate.langid import Lexicon, hash_words, lexicon_keys

    lexicon = Lexicon(lexicon_keys(hash_words(["ikke", "hvem", "begge"])),
                      lexicon_keys(hash_words(["ikkje", "kven", "begge"])))
    words = hash_words(["ikke", "ikkje", "kven", "begge", "bil", "ikke"])
    assert lexicon.counts(words) == (3, 3)  # a key in both lists counts for both
    assert lexicon.counts(hash_words(["bil"])) == (0, 0)
    assert Lexicon(lexicon_keys(hash_words(["a"]))[:0], lexicon_keys(hash_words(["a"]))[:0]).counts(words) == (0, 0)


def test_feature_count_per_order_words_and_bigrams():
    from nortune.curate.langid import feature_indices

    idx, words = feature_indices(" ab cd ", 19)  # 7 code points: 7+6+5+4+3 n-grams, 2 words, 1 bigram
    assert len(words) == 2 and len(idx) == 25 + 2 + 1
    assert idx.min() >= 0 and idx.max() < 2 ** 19
    idx, words = feature_indices(" a ", 19)  # shorter than MAX_N: 3+2+1 n-grams, 1 word
    assert len(idx) == 6 + 1
