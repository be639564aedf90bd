"""The ``decontam`` section: the contamination check of the training data against benchmark test texts.

Its test side is the documents evaluate scores; ``follow_evaluate`` fills it from the ``evaluate``
section and refuses a difference (see docs/decontam.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from nortune.config.base import Section, existing_file
from nortune.config.names import CATALOGUE, LOCAL_LAYOUT, NOREVAL_FAMILIES, local_noreval_file

if TYPE_CHECKING:
    from nortune.config.evaluate import EvaluateSection


class DecontamExtra(Section):
    """An extra benchmark given as a file (JSONL or Parquet) with the fields that hold test text."""

    name: str = Field(pattern=r"^[\w.:/-]+$")
    path: Path
    fields: list[str] = Field(min_length=1)
    id_field: str | None = None

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: Path) -> Path:
        return existing_file(value)  # type: ignore[return-value]


class DecontamNormalize(Section):
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD", "none"] = "NFKC"
    casefold: bool = True
    collapse_whitespace: bool = True
    strip_punctuation: bool = False


class DecontamSection(Section):
    """Contamination check of the training data against benchmark test texts (see docs/decontam.md)."""

    # Training file (chat JSONL, any JSONL, Parquet or .txt). None: train.data, else the curate output.
    data: Path | None = None
    # Dotted paths to the text of a training record; None: messages[].content, else "text".
    text_fields: list[str] | None = None
    # The test side is the documents evaluate scores: unset keys follow evaluate (source, data_dir,
    # revision, tasks); a value that differs from evaluate's is refused at load (Recipe._decontam_is_evaluate).
    noreval_source: Literal["hf", "local"] | None = None
    noreval_dir: Path | None = None
    noreval_revision: str | None = None
    tasks: list[str] | None = None  # NorEval families to check; must include every evaluate.tasks family
    extra: list[DecontamExtra] = Field(default_factory=list)
    # Held-out perplexity texts ({set: file}, one text per line): follow evaluate.perplexity.texts, never set here.
    heldout: dict[str, Path] | None = None
    methods: list[Literal["exact", "substring", "char_ngram", "word_ngram", "question"]] = Field(
        default_factory=lambda: ["exact", "substring", "char_ngram", "word_ngram", "question"], min_length=1)
    char_ngrams: list[int] = Field(default_factory=lambda: [50, 30], min_length=1)
    word_ngram: int = Field(13, ge=1)
    substring_min_chars: int = Field(30, ge=8)
    # The whole-question check counts words of the normalised question (Unicode \w+, punctuation dropped).
    question_min_words: int = Field(4, ge=2)  # a whole test question of at least this many words, inside a record
    # A shorter question (from this many words up to question_min_words - 1) counts only with its correct answer in
    # the same record (question_answer): alone, so few words are an ordinary phrase. Shorter still: not checked.
    question_answer_min_words: int = Field(2, ge=2)
    normalize: DecontamNormalize = Field(default_factory=DecontamNormalize)
    # Boilerplate phrases: a match that is nothing but these phrases (plus less than n other chars) is allowed.
    allow: list[str] = Field(default_factory=list)
    # The train gate refuses data with more contaminated records than this (any method, allow-list applied).
    max_contaminated_records: int = Field(0, ge=0)
    write_clean: bool = False  # also write the training file without contaminated records
    examples_per_record: int = Field(5, ge=1)

    @field_validator("char_ngrams")
    @classmethod
    def _ngrams_sane(cls, value: list[int]) -> list[int]:
        if any(n < 8 for n in value):
            raise ValueError("character n-grams shorter than 8 match ordinary words; use n >= 8")
        return sorted(set(value), reverse=True)

    @model_validator(mode="after")
    def _question_floors(self) -> "DecontamSection":
        if self.question_answer_min_words > self.question_min_words:
            raise ValueError(f"question_answer_min_words ({self.question_answer_min_words}) is above "
                             f"question_min_words ({self.question_min_words}): a question that long is already "
                             "checked alone and with its answer; use a value <= question_min_words")
        return self


def follow_evaluate(dc: DecontamSection, ev: EvaluateSection) -> DecontamSection:
    """decontam checks the very documents evaluate scores: its test side as a copy filled from evaluate (the
    recipe's own sections are left as written); a stated value that differs is refused.

    With local NorEval data, every file evaluate would score must exist: checked here, at load,
    before any expensive work starts.
    """
    for key, ours, theirs in (("noreval_source", dc.noreval_source, ev.source),
                              ("noreval_dir", dc.noreval_dir, ev.data_dir),
                              ("noreval_revision", dc.noreval_revision, ev.revision)):
        if ours is not None and (Path(ours) != Path(theirs) if key == "noreval_dir" and theirs else ours != theirs):
            raise ValueError(f"decontam.{key} is {ours} but evaluate scores {theirs}: the contamination check "
                             f"must read the documents evaluate scores (remove decontam.{key}; it follows evaluate)")
    unknown = [t for t in dc.tasks or [] if t not in NOREVAL_FAMILIES]
    missing = [t for t in ev.families if dc.tasks is not None and t not in dc.tasks]
    if unknown or missing:
        raise ValueError(f"decontam.tasks: {'unknown ' + str(unknown) if unknown else ''}"
                         f"{'; ' if unknown and missing else ''}"
                         f"{f'evaluate scores {missing} but they are not checked' if missing else ''}")
    heldout = dict(ev.perplexity.texts) if ev.perplexity is not None else None
    if dc.heldout is not None and dc.heldout != heldout:
        raise ValueError("decontam.heldout follows evaluate.perplexity.texts (the held-out texts are checked like "
                         "a test set); remove decontam.heldout")
    values = {"noreval_dir": ev.data_dir if ev.source == "local" else None, "noreval_revision": ev.revision,
              "noreval_source": ev.source, "tasks": list(dc.tasks or ev.families), "heldout": heldout}
    filled = dc.model_copy(update=values)
    if ev.source == "local":
        for family in filled.tasks:  # the file evaluate would score and decontam check
            path = local_noreval_file(Path(ev.data_dir), family, CATALOGUE[family].split)
            if not path.is_file():
                raise ValueError(f"evaluate.data_dir (task {family}): {path}: file not found ({LOCAL_LAYOUT})")
    return filled
