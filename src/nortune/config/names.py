"""The facts several parts of nortune share, each written once here.

- NorEval: the task catalogue (family, dataset, split, the fields a row needs, the published
  scores), the prompt names, the default shots, and where a local copy of a split lives;
- curate: the output buckets;
- export: the GGUF type names llama.cpp knows (with their ``LLAMA_FTYPE_*`` values);
- models: the embedded model names and the ``embedded:`` prefix.

The recipe validates against these, and the modules that own the behaviour (evaluate, decontam,
curate, export, models) import them from here, never the other way round. Standard library only:
importing this module does no work and pulls in nothing of nortune.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# --- NorEval: what evaluate scores and decontam checks ------------------------------------------


@dataclass(frozen=True)
class NorEvalTask:
    family: str          # lm-eval task name without the _pN suffix, e.g. norcommonsenseqa_nob
    label: str           # row label of the recipe's table
    dataset: str         # HF id
    config: str          # nb / nn
    split: str           # the evaluated split
    fewshot_split: str | None
    required: tuple[str, ...]  # dotted fields every row needs (checked before any model loads)
    references: tuple[float, float, float]  # NorskGemma4-31B, NorskMistral-119B, NorEval best
    category: str        # one of NOREVAL_CATEGORIES (the NorEval paper's nine)
    # Chance score in percent for the normalised score (raw - random) / (max - random); None: the
    # item's own 1 / len(choices) for multiple choice, and no normalised score for generation.
    random_baseline: float | None = None
    metric: str = "acc"  # the lm-eval metric a family's headline uses (acc / acc_norm come from evaluate.metric)

    @property
    def short(self) -> str:
        return self.dataset.split("/")[-1]


# The nine task categories of NorEval (lm-eval's noreval README), in its order.
NOREVAL_CATEGORIES = (
    "Sentiment analysis", "Norwegian language knowledge", "Norwegian-specific & world knowledge",
    "Machine reading comprehension", "Commonsense reasoning", "Machine translation", "Text summarization",
    "Instruction following", "Truthfulness",
)
_COMMONSENSE, _KNOWLEDGE, _TRUTH = "Commonsense reasoning", "Norwegian-specific & world knowledge", "Truthfulness"
REFERENCE_COLUMNS = ("NorskGemma4-31B", "NorskMistral-119B", "NorEval best")
PROMPTS = ("p0", "p1", "p2", "p3", "p4")  # lm-eval's five prompts per family: <family>_<p>
_MC = ("question", "choices.text", "choices.label", "answer")
_OBQA = ("fact", "question_stem", "choices.text", "choices.label", "answer")
_TQA = ("question", "mc1_targets.choices")

CATALOGUE: dict[str, NorEvalTask] = {t.family: t for t in [
    NorEvalTask("norcommonsenseqa_nob", "Commonsense BM", "ltg/norcommonsenseqa", "nb", "train", None, _MC,
                (85.4, 75.7, 72.2), _COMMONSENSE, 20.0),
    NorEvalTask("norcommonsenseqa_nno", "Commonsense NN", "ltg/norcommonsenseqa", "nn", "train", None, _MC,
                (73.7, 63.2, 52.6), _COMMONSENSE, 20.0),
    NorEvalTask("noropenbookqa_nob", "Open-book QA BM", "ltg/noropenbookqa", "nb", "test", "train", _OBQA,
                (96.5, 95.7, 87.4), _KNOWLEDGE, 25.0),
    NorEvalTask("noropenbookqa_nno", "Open-book QA NN", "ltg/noropenbookqa", "nn", "test", "train", _OBQA,
                (94.4, 93.3, 88.9), _KNOWLEDGE, 25.0),
    NorEvalTask("nortruthfulqa_mc_nob", "Truthfulness BM", "ltg/nortruthfulqa_mc", "nb", "validation", None, _TQA,
                (85.7, 77.9, 74.6), _TRUTH),
    NorEvalTask("nortruthfulqa_mc_nno", "Truthfulness NN", "ltg/nortruthfulqa_mc", "nn", "validation", None, _TQA,
                (93.0, 82.5, 73.7), _TRUTH),
    NorEvalTask("nrk_quiz_qa_nob", "Norwegian knowledge BM", "ltg/nrk_quiz_qa", "nb", "test", None, _MC,
                (70.9, 66.5, 63.7), _KNOWLEDGE),
    NorEvalTask("nrk_quiz_qa_nno", "Norwegian knowledge NN", "ltg/nrk_quiz_qa", "nn", "test", None, _MC,
                (69.6, 65.1, 71.9), _KNOWLEDGE),
]}
NOREVAL_FAMILIES = tuple(CATALOGUE)
REFERENCE_AVERAGES = (83.6, 76.8, 73.1)
# Shots per family when the recipe names none; the others run 0-shot (the recipe: 16-shot open-book QA).
DEFAULT_FEWSHOT = {"noropenbookqa_nob": 16, "noropenbookqa_nno": 16}
LOCAL_LAYOUT = "local layout: <data_dir>/<task>/<nb|nn>/<split>.jsonl, HF schema"


def local_noreval_file(root: Path, family: str, split: str) -> Path:
    """A local copy of a family's split: the first of ``<root>/<dataset>/<nb|nn>/<split>.jsonl|.json|.parquet``
    that is a file; when none is, the ``.jsonl`` path (callers say it is missing, with ``LOCAL_LAYOUT``)."""
    task = CATALOGUE[family]
    candidates = [root / task.short / task.config / f"{split}{ext}" for ext in (".jsonl", ".json", ".parquet")]
    return next((c for c in candidates if c.is_file()), candidates[0])


# --- curate ---------------------------------------------------------------------------------------

# Every curated record lands in one bucket; the recipe's curate.shares are per bucket.
CURATE_BUCKETS = ("nb", "nn", "en", "other", "mixed", "translation")

# --- export: GGUF types as llama.cpp spells them --------------------------------------------------

# Every type llama_model_quantize can make, with its LLAMA_FTYPE_* value.
QUANTIZER_FTYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10,
    "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16,
    "Q5_K_M": 17, "Q6_K": 18, "IQ2_XXS": 19, "IQ2_XS": 20, "Q2_K_S": 21, "IQ3_XS": 22,
    "IQ3_XXS": 23, "IQ1_S": 24, "IQ4_NL": 25, "IQ3_S": 26, "IQ3_M": 27, "IQ2_S": 28, "IQ2_M": 29,
    "IQ4_XS": 30, "IQ1_M": 31, "BF16": 32, "TQ1_0": 36, "TQ2_0": 37,
}
# Without an importance matrix llama.cpp refuses (or ruins) these; nortune does not make one.
NEEDS_IMATRIX = {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "Q2_K_S"}

# --- models: the demo models shipped on PyPI (nortune.models knows how to fetch each) -------------

EMBEDDED_PREFIX = "embedded:"
GEMMA3_270M = "gemma3-270m"
EMBEDDED_MODEL_NAMES = (GEMMA3_270M,)
