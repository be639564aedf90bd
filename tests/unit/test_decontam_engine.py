"""The matching engine: exact boundaries for every method, collisions never reported, odd inputs."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nortune.decontam import charindex
from nortune.decontam.normalize import Normalizer
from nortune.decontam.scan import Scanner, ScanSettings
from nortune.decontam.sources import TestText, TrainRecord

WORDS = ("fjell hytte sjø båt regn snø dag natt by bygd elv skog vei tog buss fisk brød ost melk "
         "kaffe bok skole lærer elev barn mor far venn sol måne vind hav øy dal strand hus gård").split()


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def text_of_length(rng: random.Random, length: int) -> str:
    out = words(rng, length)  # plenty of characters
    out = out[:length]
    # no leading/trailing space, so normalisation keeps the exact length
    return out.replace(" ", "x") if out != out.strip() else out


def scan(tests: list[str], trains: list[str], **kw) -> dict:
    settings = ScanSettings(methods=kw.pop("methods", ["exact", "substring", "char_ngram", "word_ngram"]), **kw)
    scanner = Scanner([TestText(f"t{i}", "task", t) for i, t in enumerate(tests)], settings)
    scanner.scan(TrainRecord(i + 1, None, None, None, t) for i, t in enumerate(trains))
    return scanner.summary()


def planted(shared: str, offset: int = 7) -> tuple[str, str]:
    """A test text and a training text that share exactly ``shared`` and nothing longer."""
    test = "<" * 5 + shared + ">" * 5
    train = "§" * offset + shared + "¤" * 9
    return test, train


@pytest.mark.parametrize("n", [50, 30, 12])
@pytest.mark.parametrize("offset", [0, 1, 3, 11, 16])
def test_char_ngram_boundary_exact(n: int, offset: int) -> None:
    rng = random.Random(n * 100 + offset)
    for length, expect in ((n - 1, 0), (n, 1), (n + 1, 1)):
        shared = text_of_length(rng, length)
        test, train = planted(shared, offset)
        report = scan([test], [train], methods=["char_ngram"], char_ngrams=[n])
        got = report["methods"][f"char_{n}gram"]
        assert got["hits"] == expect, (n, offset, length)
        if expect:
            assert got["longest_match"] == length
            match = report["records"][0]["methods"][f"char_{n}gram"]["matches"][0]
            assert match["text"] == shared and match["train_offset"] == offset and match["test_offset"] == 5


def test_several_n_from_one_index_each_exact() -> None:
    rng = random.Random(1)
    for length in (29, 30, 49, 50):
        test, train = planted(text_of_length(rng, length))
        got = scan([test], [train], methods=["char_ngram"], char_ngrams=[50, 30])["methods"]
        assert got["char_30gram"]["hits"] == (length >= 30)
        assert got["char_50gram"]["hits"] == (length >= 50)


@pytest.mark.parametrize("stride", [1, 2, 7, 30])
def test_any_stride_keeps_exactness(stride: int) -> None:
    rng = random.Random(stride)
    for length, expect in ((29, 0), (30, 1)):
        test, train = planted(text_of_length(rng, length), offset=stride + 1)
        got = scan([test], [train], methods=["char_ngram"], char_ngrams=[30], stride=stride)
        assert got["methods"]["char_30gram"]["hits"] == expect


def test_substring_both_ways_at_the_minimum() -> None:
    rng = random.Random(2)
    for length, expect in ((29, 0), (30, 1), (45, 1)):
        short = text_of_length(rng, length)
        # test text inside a training record
        got = scan([short], ["innledning: " + short + " og mer"], methods=["substring"], substring_min_chars=30)
        assert got["methods"]["substring"]["hits"] == expect, length
        # training record inside a test text
        got = scan(["en lang tekst som slutter med " + short + "."], [short], methods=["substring"],
                   substring_min_chars=30)
        assert got["methods"]["substring"]["hits"] == expect, length


def test_substring_partial_overlap_is_not_containment() -> None:
    rng = random.Random(3)
    test_text = text_of_length(rng, 80)
    train = "§§ " + test_text[:60]  # shares 60 chars but contains neither whole text
    got = scan([test_text], [train], methods=["substring", "char_ngram"], char_ngrams=[50], substring_min_chars=30)
    assert got["methods"]["substring"]["hits"] == 0
    assert got["methods"]["char_50gram"]["hits"] == 1


def test_word_ngram_boundary_lm_eval_convention() -> None:
    rng = random.Random(4)
    ascii_words = [w for w in WORDS if w.isascii()]  # lm-eval lowercases ASCII only (documented)
    shared12 = " ".join(rng.choice(ascii_words) for _ in range(12))
    shared13 = shared12 + " " + rng.choice(ascii_words)
    for shared, expect in ((shared12, 0), (shared13, 1)):
        test = "alfa beta " + shared + " gamma delta"
        train = "Omega: " + shared.upper().replace(" ", ", ") + " zulu"  # ASCII case and punctuation ignored
        got = scan([test], [train], methods=["word_ngram"])["methods"]["word_13gram"]
        assert got["hits"] == expect


def test_exact_match_uses_configured_normalisation() -> None:
    test, train = "Hva er klokka?", "  hva   ER\tklokka? "
    assert scan([test], [train], methods=["exact"])["methods"]["exact"]["hits"] == 1
    strict = Normalizer(unicode_form="none", casefold=False, collapse_whitespace=False)
    assert scan([test], [train], methods=["exact"], normalizer=strict)["methods"]["exact"]["hits"] == 0
    punct = Normalizer(strip_punctuation=True)
    assert scan(["Hva, er klokka"], ["hva er klokka?!"], methods=["exact"], normalizer=punct)[
        "methods"]["exact"]["hits"] == 1


def test_unicode_forms_and_astral_characters() -> None:
    composed = "Æbleskiver på kafé i Tromsø, med blåbær og rømme til 🍓🍓 dessert i dag!"
    decomposed = composed.replace("é", "e\u0301").replace("å", "a\u030a")
    got = scan([composed], ["før: " + decomposed + " etter"], methods=["char_ngram"], char_ngrams=[30])
    assert got["methods"]["char_30gram"]["hits"] == 1
    assert got["methods"]["char_30gram"]["longest_match"] == len(composed)
    emoji = "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 " * 6
    raw = Normalizer(unicode_form="none", casefold=False)
    got = scan(["<" + emoji + ">"], ["[" + emoji + "]"], methods=["char_ngram"], char_ngrams=[30], normalizer=raw)
    assert got["methods"]["char_30gram"]["longest_match"] == len(emoji)  # the trailing space sits before ">"


def test_hash_collisions_never_become_hits(monkeypatch) -> None:
    """Make every window hash equal: every probe is a candidate, only true matches may survive."""
    monkeypatch.setattr(charindex, "HASH_MASK", np.uint64(0))  # index and probes alike hash to 0
    rng = random.Random(5)
    shared = text_of_length(rng, 40)
    tests = [words(rng, 30), "<<" + shared + ">>", words(rng, 20)]
    trains = [words(random.Random(9), 40), "§" + shared + "¤", ""]
    got = scan(tests, trains, methods=["char_ngram"], char_ngrams=[30])
    assert got["methods"]["char_30gram"]["hits"] == 1
    assert got["records"][0]["line"] == 2
    assert got["records"][0]["methods"]["char_30gram"]["matches"][0]["text"] == shared


def test_random_text_agrees_with_a_brute_force_oracle() -> None:
    rng = random.Random(6)
    tests = [words(rng, rng.randint(3, 25)) for _ in range(40)]
    trains = [words(rng, rng.randint(0, 40)) for _ in range(60)]
    n = 24
    oracle = {i for i, t in enumerate(trains)
              if any(t[k:k + n] in s for s in tests for k in range(len(t) - n + 1))}
    got = scan(tests, trains, methods=["char_ngram"], char_ngrams=[n])
    assert {r["line"] - 1 for r in got["records"]} == oracle


def test_empty_short_and_very_long_records() -> None:
    rng = random.Random(7)
    shared = text_of_length(rng, 60)
    filler = "".join(rng.choice("qzxv ") for _ in range(300_000)).replace("  ", " q")
    long_train = filler[:150_000] + "§" + shared + "¤" + filler[150_000:]
    tests = ["", "kort", "<" + shared + ">"]
    trains = ["", "x", long_train, "   "]
    got = scan(tests, trains, methods=["exact", "substring", "char_ngram"], char_ngrams=[50, 30],
               chunk_chars=10_000)  # forces the long record to be split into overlapping pieces
    assert got["training"]["records"] == 4 and got["training"]["empty_records"] == 2
    assert got["test_side"]["empty_texts"] == 1
    assert got["methods"]["char_50gram"]["hits"] == 1
    assert got["methods"]["char_50gram"]["longest_match"] == 60
    assert got["methods"]["exact"]["hits"] == 0  # empty never equals empty
    assert [r["line"] for r in got["records"]] == [3]


def test_span_across_a_piece_boundary_is_found_once() -> None:
    rng = random.Random(8)
    shared = text_of_length(rng, 200)
    train = "#" * 9_950 + shared + "#" * 500  # the chunk limit cuts through the shared run
    got = scan(["<" + shared + ">"], [train], methods=["char_ngram"], char_ngrams=[50], chunk_chars=10_000)
    assert got["methods"]["char_50gram"]["hits"] == 1
    assert got["methods"]["char_50gram"]["longest_match"] == 200


def test_allow_list_is_applied_and_reported() -> None:
    boiler = "Svar kort og presist på spørsmålet nedenfor, med bare ett ord."
    rng = random.Random(10)
    question = text_of_length(rng, 60)
    tests = [boiler + " " + question]
    only_boiler = ["Oppgave: " + boiler + " Hei"]
    got = scan(tests, only_boiler, methods=["char_ngram"], char_ngrams=[50], allow=[boiler])
    assert got["methods"]["char_50gram"]["hits"] == 0
    assert got["methods"]["char_50gram"]["allowed_hits"] == 1
    assert got["allowed"]["hits_by_phrase"] == {Normalizer()(boiler): 1}
    # the real question copied along with the boilerplate still counts
    got = scan(tests, [boiler + " " + question], methods=["char_ngram"], char_ngrams=[50], allow=[boiler])
    assert got["methods"]["char_50gram"]["hits"] == 1
    without = scan(tests, only_boiler, methods=["char_ngram"], char_ngrams=[50])
    assert without["methods"]["char_50gram"]["hits"] == 1


def test_report_names_both_ids_and_task() -> None:
    rng = random.Random(11)
    shared = text_of_length(rng, 55)
    settings = ScanSettings(methods=["char_ngram"], char_ngrams=[50])
    scanner = Scanner([TestText("nrk_quiz_qa_nb/test/q7/question", "nrk_quiz_qa_nb", "<" + shared + ">")], settings)
    scanner.scan([TrainRecord(12, "rec-12", None, None, "§" + shared)])
    out = scanner.summary()
    rec = out["records"][0]
    assert (rec["line"], rec["id"]) == (12, "rec-12")
    match = rec["methods"]["char_50gram"]["matches"][0]
    assert match["test_id"] == "nrk_quiz_qa_nb/test/q7/question" and match["task"] == "nrk_quiz_qa_nb"
    assert out["methods"]["char_50gram"]["by_task"]["nrk_quiz_qa_nb"] == {
        "hits": 1, "train_records": 1, "test_texts": 1, "longest_match": 55}


def test_batch_normalisation_equals_one_by_one() -> None:
    rng = random.Random(12)
    alphabet = list("ab æø\t\n\r  \u00a0\u2003\u3000x\x1c\x85.,É")
    norm = Normalizer()
    for _ in range(500):
        texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(rng.randint(1, 6))]
        assert norm.batch(texts) == [norm(t) for t in texts]


def test_compiled_normalisation_matches_str_methods() -> None:
    """The batch path (one compiled pass) equals NFKC + str.casefold + split/join, text by text."""
    from nortune.decontam.normalize import _FOLD_LIMIT

    assert all(chr(c).casefold() == chr(c) for c in range(_FOLD_LIMIT, 0x110000) if not 0xD800 <= c < 0xE000)
    assert not any(chr(c).casefold().isspace() for c in range(0x3001, _FOLD_LIMIT) if not 0xD800 <= c < 0xE000)
    rng = random.Random(11)
    alphabet = list(" \t\n\u3000\u00a0\u2028\x85ÆØÅæøåßẞİΣσςﬁŉǰΐＡ\u212a\U00010400\U0001e900Ab.,!") + ["ord", "ÅR"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(400)]
    for norm in (Normalizer(), Normalizer(strip_punctuation=True), Normalizer(collapse_whitespace=False),
                 Normalizer(unicode_form="none"), Normalizer(unicode_form="none", casefold=False)):
        assert norm.batch(texts) == [norm(t) for t in texts]
