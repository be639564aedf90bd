"""Run every method over a stream of training records against one test-side index.

Memory: the test-side indexes, one batch of training text (``chunk_chars``) and the
findings of contaminated records. Nothing else grows with the training side.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nortune.decontam.charindex import ChunkPieces, CharIndex
from nortune.decontam.normalize import Normalizer, lm_eval_words
from nortune.decontam.sources import TestText, TrainRecord
from nortune.decontam.spans import Span, SpanCollector
from nortune.decontam.wordindex import WordIndex

SNIPPET = 300
QUESTION_KEYS = ("question_answer", "question")
_WORD = re.compile(r"\w+")


def question_words(normalised: str) -> list[str]:
    """Words of an already normalised text for the whole-question check (Unicode-aware, punctuation dropped)."""
    return _WORD.findall(normalised)


@dataclass
class ScanSettings:
    methods: list[str]
    char_ngrams: list[int] = field(default_factory=lambda: [50, 30])
    word_ngram: int = 13
    substring_min_chars: int = 30
    question_min_words: int = 4
    question_answer_min_words: int = 2
    normalizer: Normalizer = field(default_factory=Normalizer)
    allow: list[str] = field(default_factory=list)
    examples_per_record: int = 5
    chunk_chars: int = 1 << 22
    stride: int | None = None

    @classmethod
    def from_section(cls, section) -> "ScanSettings":
        return cls(methods=list(section.methods), char_ngrams=sorted(section.char_ngrams, reverse=True),
                   word_ngram=section.word_ngram, substring_min_chars=section.substring_min_chars,
                   question_min_words=section.question_min_words,
                   question_answer_min_words=section.question_answer_min_words,
                   normalizer=Normalizer.from_settings(section.normalize), allow=list(section.allow),
                   examples_per_record=section.examples_per_record)

    def method_keys(self) -> list[str]:
        keys = []
        for method in self.methods:
            if method == "char_ngram":
                keys.extend(f"char_{n}gram" for n in sorted(self.char_ngrams, reverse=True))
            elif method == "word_ngram":
                keys.append(f"word_{self.word_ngram}gram")
            elif method == "question":
                keys.extend(QUESTION_KEYS)  # with its correct answer in the record (the harder flag), without
            else:
                keys.append(method)
        return keys


class AllowList:
    """Boilerplate phrases: a match is allowed when, without them, less than the method's minimum remains."""

    def __init__(self, phrases: list[str], normalizer: Normalizer) -> None:
        self.phrases = sorted({p for p in (normalizer(x) for x in phrases) if p}, key=len, reverse=True)
        self.word_phrases = sorted({" ".join(lm_eval_words(x)) for x in phrases} - {""}, key=len, reverse=True)
        self.question_phrases = sorted({" ".join(question_words(normalizer(x))) for x in phrases} - {""},
                                       key=len, reverse=True)
        self._char = re.compile("|".join(map(re.escape, self.phrases))) if self.phrases else None
        self._word = re.compile("|".join(map(re.escape, self.word_phrases))) if self.word_phrases else None
        self._question = (re.compile("|".join(r"\b" + re.escape(p) + r"\b" for p in self.question_phrases))
                          if self.question_phrases else None)

    def residual(self, text: str, words: bool = False, question: bool = False) -> tuple[int, list[str]]:
        """(longest stretch left after removing allowed phrases, the phrases found); words for word methods."""
        pattern = self._question if question else self._word if words else self._char
        words = words or question
        if pattern is None:
            return (len(text.split()) if words else len(text)), []
        found = pattern.findall(text)
        if not found:
            return (len(text.split()) if words else len(text)), []
        pieces = pattern.split(text)
        size = max((len(p.split()) if words else len(p.strip())) for p in pieces)
        return size, sorted(set(found))


class MethodTally:
    def __init__(self) -> None:
        self.hits = 0
        self.allowed = 0
        self.records = 0
        self.longest = 0
        self.by_task: dict[str, dict[str, Any]] = {}

    def add(self, task: str, test: int, length: int) -> None:
        entry = self.by_task.setdefault(task, {"hits": 0, "records": 0, "test_texts": set(), "longest": 0})
        entry["hits"] += 1
        entry["test_texts"].add(test)
        entry["longest"] = max(entry["longest"], length)
        self.hits += 1
        self.longest = max(self.longest, length)

    def to_json(self) -> dict[str, Any]:
        return {"hits": self.hits, "contaminated_records": self.records, "allowed_hits": self.allowed,
                "longest_match": self.longest,
                "by_task": {task: {"hits": e["hits"], "train_records": e["records"],
                                   "test_texts": len(e["test_texts"]), "longest_match": e["longest"]}
                            for task, e in sorted(self.by_task.items())}}


class Scanner:
    def __init__(self, tests: list[TestText], settings: ScanSettings) -> None:
        self.settings = settings
        self.tests = tests
        norm = settings.normalizer
        self.norm_tests = norm.batch([t.text for t in tests])
        methods = set(settings.methods)
        self.allow = AllowList(settings.allow, norm)
        self.exact: dict[str, list[int]] = {}
        if "exact" in methods:
            for i, text in enumerate(self.norm_tests):
                if text:
                    self.exact.setdefault(text, []).append(i)
        spans_needed = [*(settings.char_ngrams if "char_ngram" in methods else []),
                        *([settings.substring_min_chars] if "substring" in methods else [])]
        self.char_index = CharIndex(self.norm_tests, min(spans_needed), settings.stride) if spans_needed else None
        self.word_index = (WordIndex([lm_eval_words(t.text) for t in tests], settings.word_ngram)
                           if "word_ngram" in methods else None)
        self.question_indexes: list[WordIndex] = []
        self.question_floors: dict[str, int] = {}
        if "question" in methods:
            self._question_side(tests, norm)
        self.tallies = {key: MethodTally() for key in settings.method_keys()}
        self.contaminated: list[dict[str, Any]] = []
        self.allowed_examples: list[dict[str, Any]] = []
        self.allowed_phrases: dict[str, int] = {}
        self.records = 0
        self.empty_records = 0
        self.chars = 0

    def _question_side(self, tests: list[TestText], norm: Normalizer) -> None:
        """Whole questions, found through their word n-grams: one index of n = question_min_words for the
        questions that long, and one of n = k for the k-word questions under it that have an answer."""
        alone = self.settings.question_min_words
        paired = min(self.settings.question_answer_min_words, alone)  # the config refuses more; be safe here
        words = [question_words(text) if t.question else [] for t, text in zip(tests, self.norm_tests)]
        answers = {i: " ".join(question_words(norm(t.answer))) for i, t in enumerate(tests) if words[i] and t.answer}
        answers = {i: a for i, a in answers.items() if a}  # an answer of punctuation only is no answer
        self.question_words = [w if len(w) >= alone or (len(w) >= paired and i in answers) else []
                               for i, w in enumerate(words)]
        self.answers = {i: a for i, a in answers.items() if self.question_words[i]}
        vocab: dict[str, int] = {}  # shared, so a batch is turned into ids once for every index
        self.question_indexes = [WordIndex([w if len(w) >= alone else [] for w in self.question_words], alone, vocab)]
        self.question_indexes += [WordIndex([w if len(w) == k else [] for w in self.question_words], k, vocab)
                                  for k in range(paired, alone)]
        sizes = [len(w) for t, w in zip(tests, words) if t.question]
        short = [i for i, (t, w) in enumerate(zip(tests, words)) if t.question and paired <= len(w) < alone]
        self.question_floors = {
            "whole_question": sum(1 for n in sizes if n >= alone),      # checked alone and with the answer
            "with_answer_only": len(short),                             # checked only with their answer
            "with_answer_only_no_answer": sum(1 for i in short if i not in answers),  # so not checked at all
            "under_floor": sum(1 for n in sizes if n < paired),         # not checked
        }

    # -- the stream ---------------------------------------------------------------------------
    def scan(self, records: Iterable[TrainRecord],
             on_record: Callable[[TrainRecord, bool], None] | None = None) -> None:
        batch: list[TrainRecord] = []
        size = 0
        for record in records:
            batch.append(record)
            size += len(record.text)
            if size >= self.settings.chunk_chars:
                self._batch(batch, on_record)
                batch, size = [], 0
        if batch:
            self._batch(batch, on_record)

    def _batch(self, batch: list[TrainRecord], on_record) -> None:
        first = self.records
        norm = self.settings.normalizer.batch([r.text for r in batch])
        texts = {first + i: t for i, t in enumerate(norm)}
        char_spans = SpanCollector()
        word_spans = SpanCollector()
        tokens: dict[int, list[str]] = {}
        if self.char_index is not None:
            for chunk in self._chunks(texts):
                self.char_index.collect(chunk.text(), chunk, texts, char_spans)
        if self.word_index is not None:
            tokens = {first + i: lm_eval_words(r.text) for i, r in enumerate(batch)}
            self.word_index.collect(tokens, word_spans)
        question_spans = SpanCollector()
        qtokens: dict[int, list[str]] = {}
        if self.question_indexes:
            qtokens = {idx: question_words(text) for idx, text in texts.items()}
            encoded = self.question_indexes[0].encode(qtokens)  # one vocabulary for all of them
            for index in self.question_indexes:
                index.collect(qtokens, question_spans, encoded)
        for i, record in enumerate(batch):
            idx = first + i
            self.chars += len(record.text)
            if not texts[idx]:
                self.empty_records += 1
            found = self._evaluate(idx, record, texts[idx], char_spans.pop(idx), word_spans.pop(idx),
                                   tokens.get(idx), question_spans.pop(idx), qtokens.get(idx))
            if on_record is not None:
                on_record(record, found)
        self.records += len(batch)

    def _chunks(self, texts: dict[int, str]):
        limit = self.settings.chunk_chars
        overlap = self.char_index.min_span - 1
        chunk = ChunkPieces()
        for idx, text in texts.items():
            if len(text) < self.char_index.width:
                continue
            step = max(limit - overlap, 1)
            offsets = [0] if len(text) <= limit else range(0, len(text) - overlap, step)
            for off in offsets:
                piece = text[off:off + limit]
                if chunk.parts and chunk.length + len(piece) + 1 > limit:
                    yield chunk
                    chunk = ChunkPieces()
                chunk.add(idx, off, piece)
        if chunk.parts:
            yield chunk

    # -- verdicts -------------------------------------------------------------------------------
    def _evaluate(self, idx: int, record: TrainRecord, text: str, spans: list[Span], wspans: list[Span],
                  tokens: list[str] | None, qspans: list[Span], qtokens: list[str] | None) -> bool:
        s = self.settings
        per_method: dict[str, list[dict[str, Any]]] = {}

        def emit(key: str, test: int, tstart: int, ostart: int, length: int, snippet: str, words: bool,
                 minimum: int, **more: Any) -> None:
            residual, phrases = self.allow.residual(snippet, words=words, question=key in QUESTION_KEYS)
            match = {"test_id": self.tests[test].uid, "task": self.tests[test].task, "train_offset": tstart,
                     "test_offset": ostart, "length": length, "text": snippet[:SNIPPET], **more}
            if phrases and residual < minimum:
                self.tallies[key].allowed += 1
                for p in phrases:
                    self.allowed_phrases[p] = self.allowed_phrases.get(p, 0) + 1
                if len(self.allowed_examples) < 1000:
                    self.allowed_examples.append({"method": key, "record_line": record.line,
                                                  "phrases": phrases, **match})
                return
            self.tallies[key].add(self.tests[test].task, test, length)
            per_method.setdefault(key, []).append(match)

        if "exact" in s.methods and text in self.exact:
            for test in self.exact[text]:
                emit("exact", test, 0, 0, len(text), text, False, 1)
        for sp in spans:
            snippet = text[sp.train_start:sp.train_start + sp.length]
            if "char_ngram" in s.methods:
                for n in s.char_ngrams:
                    if sp.length >= n:
                        emit(f"char_{n}gram", sp.test, sp.train_start, sp.test_start, sp.length, snippet, False, n)
            if "substring" in s.methods and sp.length >= s.substring_min_chars:
                whole_test = sp.length == len(self.norm_tests[sp.test])
                whole_train = sp.length == len(text)
                if whole_test or whole_train:
                    emit("substring", sp.test, sp.train_start, sp.test_start, sp.length, snippet, False,
                         s.substring_min_chars)
        for sp in wspans:
            snippet = " ".join(tokens[sp.train_start:sp.train_start + sp.length])
            emit(f"word_{s.word_ngram}gram", sp.test, sp.train_start, sp.test_start, sp.length, snippet, True,
                 s.word_ngram)
        for sp in qspans:
            whole = self.question_words[sp.test]
            if sp.test_start != 0 or sp.length != len(whole):
                continue  # only part of the question: the n-gram methods judge that
            answer = self.answers.get(sp.test)
            rest = qtokens[:sp.train_start] + ["|"] + qtokens[sp.train_start + sp.length:]  # type: ignore[index]
            with_answer = bool(answer) and f" {answer} " in f" {' '.join(rest)} "  # outside the question itself
            short = len(whole) < s.question_min_words
            if short and not with_answer:
                continue  # a question this short is evidence only together with its answer
            emit(QUESTION_KEYS[0] if with_answer else QUESTION_KEYS[1], sp.test, sp.train_start, 0, sp.length,
                 " ".join(whole), True, s.question_answer_min_words if short else s.question_min_words,
                 answer=self.tests[sp.test].answer, answer_in_record=with_answer)
        if not per_method:
            return False
        entry: dict[str, Any] = {"record": idx, "line": record.line, "id": record.rid, "methods": {}}
        for key, matches in per_method.items():
            tally = self.tallies[key]
            tally.records += 1
            for task in {m["task"] for m in matches}:
                tally.by_task[task]["records"] += 1
            entry["methods"][key] = {"hits": len(matches), "longest_match": max(m["length"] for m in matches),
                                     "matches": matches[:s.examples_per_record]}
        self.contaminated.append(entry)
        return True

    def summary(self) -> dict[str, Any]:
        tasks: dict[str, int] = {}
        for t in self.tests:
            tasks[t.task] = tasks.get(t.task, 0) + 1
        index = {}
        if self.char_index is not None:
            index["char"] = {"min_span": self.char_index.min_span, "window": self.char_index.width,
                             "stride": self.char_index.stride, "windows": self.char_index.windows,
                             "bytes": self.char_index.nbytes}
        if self.word_index is not None:
            index["word"] = {"n": self.word_index.n, "windows": self.word_index.windows,
                             "vocabulary": len(self.word_index.vocab)}
        if self.question_indexes:
            floors = self.question_floors
            index["question"] = {"min_words": self.settings.question_min_words,
                                 "min_words_with_answer": self.settings.question_answer_min_words,
                                 "questions": sum(1 for w in self.question_words if w),
                                 "questions_by_floor": dict(floors),
                                 "short_questions_skipped": floors["under_floor"]
                                 + floors["with_answer_only_no_answer"]}
        return {
            "training": {"records": self.records, "empty_records": self.empty_records, "chars": self.chars,
                         "contaminated_records": len(self.contaminated)},
            "test_side": {"texts": len(self.tests), "empty_texts": sum(1 for t in self.norm_tests if not t),
                          "texts_by_task": dict(sorted(tasks.items())), "index": index},
            "methods": {key: tally.to_json() for key, tally in self.tallies.items()},
            "allowed": {"phrases": self.allow.phrases, "hits_by_phrase": dict(sorted(self.allowed_phrases.items())),
                        "examples": self.allowed_examples},
            "records": self.contaminated,
        }
