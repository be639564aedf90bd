"""The facts several parts of nortune share, each written once here.

- NorEval: the task catalogue (family, dataset, split, the fields a row needs, the published
  scores, category, headline metric, decontam's text fields), the prompt names, the suites, the default shots, and where a local copy of a split lives;
- curate: the output buckets;
- export: the GGUF type names llama.cpp knows (with their ``LLAMA_FTYPE_*`` values), Ollama's parameter names;
- models: the embedded model names and the ``embedded:`` prefix.

The recipe validates against these, and the modules that own the behaviour (evaluate, decontam,
curate, export, models) import them from here, never the other way round. Standard library only:
importing this module does no work and pulls in nothing of nortune.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Fewer items (or texts) than this: an interval is shown, but no verdict is drawn (evaluate's statistics, the
# perplexity guard, and the training watch, whose settings are checked against it).
MIN_VERDICT_ITEMS = 20


def too_few(n: int, what: str = "items") -> str:
    """The words shown instead of a verdict for an interval from fewer than MIN_VERDICT_ITEMS."""
    return f"too few {what} ({n} < {MIN_VERDICT_ITEMS}): no verdict"


# --- NorEval: what evaluate scores and decontam checks ------------------------------------------


@dataclass(frozen=True)
class NorEvalTask:
    family: str          # lm-eval task name without the _pN suffix, e.g. norcommonsenseqa_nob
    label: str           # row label of the report's table
    dataset: str         # HF id
    config: str          # HF dataset_name (nb / nn / eng-nob / ...), "" for a dataset without configs
    split: str           # the evaluated split
    fewshot_split: str | None  # where lm-eval draws few-shot examples from (None: the family runs 0-shot only)
    required: tuple[str, ...]  # dotted fields every row needs (checked before any model loads)
    references: tuple[float, float, float] | None  # NorskGemma4-31B, NorskMistral-119B, NorEval best; None: none published
    category: str        # one of NOREVAL_CATEGORIES (the NorEval paper's nine)
    # Chance score in percent for the normalised score (raw - random) / (max - random); None: the
    # item's own 1 / len(choices) for multiple choice, and no normalised score for generation.
    random_baseline: float | None = None
    metric: str = "acc"  # the lm-eval metric a family's headline uses (acc / acc_norm come from evaluate.metric)
    prompts: tuple[str, ...] = ("p0", "p1", "p2", "p3", "p4")  # its lm-eval tasks <family>_<p>; () = one task <family>
    output: str = "multiple_choice"  # lm-eval output_type of its YAML: multiple_choice or generate_until
    metric_max: float = 1.0  # the metric's maximum as lm-eval reports it: 1 for acc / f1 / em, 100 for bleu / chrf / rouge
    text_fields: tuple[str, ...] = ()  # dotted fields whose text decontam checks (questions, passages, targets)
    question_field: str | None = None  # decontam's whole-question check reads this field
    optional_text_fields: tuple[str, ...] = ()  # checked when a row has them
    # A published metric lm-eval does not compute (it needs a separate script or tool): why, for the report.
    external_metric: str | None = None

    @property
    def short(self) -> str:
        return self.dataset.split("/")[-1]

    @property
    def task_names(self) -> tuple[str, ...]:
        """The lm-eval task names of this family, one per prompt."""
        return tuple(f"{self.family}_{p}" for p in self.prompts) if self.prompts else (self.family,)

    def task_name(self, prompt: str) -> str:
        return f"{self.family}_{prompt}" if self.prompts else self.family


# The nine task categories of NorEval (lm-eval's noreval README), in its order.
NOREVAL_CATEGORIES = (
    "Sentiment analysis", "Norwegian language knowledge", "Norwegian-specific & world knowledge",
    "Machine reading comprehension", "Commonsense reasoning", "Machine translation", "Text summarization",
    "Instruction following", "Truthfulness",
)
(_SENTIMENT, _LANGUAGE, _KNOWLEDGE, _READING, _COMMONSENSE, _TRANSLATION, _SUMMARY, _INSTRUCT,
 _TRUTH) = NOREVAL_CATEGORIES
REFERENCE_COLUMNS = ("NorskGemma4-31B", "NorskMistral-119B", "NorEval best")
PROMPTS = ("p0", "p1", "p2", "p3", "p4")  # the recipe's five prompts per family: <family>_<p>
ALL_PROMPTS = (*PROMPTS, "p5")            # every prompt name NorEval uses (norsumm has six)
SINGLE_PROMPT = "p0"  # the prompt name of a family with one unsuffixed lm-eval task (ncb, the instruct sets)
_MC = ("question", "choices.text", "choices.label", "answer")
_OBQA = ("fact", "question_stem", "choices.text", "choices.label", "answer")
_TQA = ("question", "mc1_targets.choices")
_BELEBELE = ("flores_passage", "question", "mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4",
             "correct_answer_num")
_IDIOM = ("idiom_start", "completion", "accepted_completions", "language")
_INSTRUCTION = ("prompt", "context", "response")
_TATOEBA = ("sourceString", "targetString")
_TQA_GEN = ("question", "correct_answers", "incorrect_answers")
_GEN = {"output": "generate_until", "metric_max": 100.0}  # BLEU / chrF / ROUGE are 0..100 in lm-eval
_FOUR = ("p0", "p1", "p2", "p3")
_ONE: tuple[str, ...] = ()


def _mc(family, label, dataset, config, split, fewshot, required, refs, category, random=None, **kw) -> NorEvalTask:
    texts = tuple(f for f in required if f not in ("choices.label", "answer", "correct_answer_num", "sentiment"))
    question = "question_stem" if "question_stem" in required else "question"
    return NorEvalTask(family, label, dataset, config, split, fewshot, required, refs, category, random,
                       text_fields=texts, question_field=question, **kw)


def _gen(family, label, dataset, config, split, fewshot, required, category, metric, **kw) -> NorEvalTask:
    return NorEvalTask(family, label, dataset, config, split, fewshot, required, None, category, None, metric,
                       text_fields=kw.pop("text_fields", required), **{**_GEN, **kw})


_GEC = ("ERRANT F0.5, NorEval's ask_gec metric, is computed by lm-eval's separate errant.py script with the "
        "errant package and a Norwegian spaCy model, not by lm-eval's evaluation; nortune reports lm-eval's "
        "exact_match instead")

CATALOGUE: dict[str, NorEvalTask] = {t.family: t for t in [
    # The recipe's eight (RECIPE_FAMILIES), with the published scores of its table.
    _mc("norcommonsenseqa_nob", "Commonsense BM", "ltg/norcommonsenseqa", "nb", "train", None, _MC,
        (85.4, 75.7, 72.2), _COMMONSENSE, 20.0),
    _mc("norcommonsenseqa_nno", "Commonsense NN", "ltg/norcommonsenseqa", "nn", "train", None, _MC,
        (73.7, 63.2, 52.6), _COMMONSENSE, 20.0),
    _mc("noropenbookqa_nob", "Open-book QA BM", "ltg/noropenbookqa", "nb", "test", "train", _OBQA,
        (96.5, 95.7, 87.4), _KNOWLEDGE, 25.0),
    _mc("noropenbookqa_nno", "Open-book QA NN", "ltg/noropenbookqa", "nn", "test", "train", _OBQA,
        (94.4, 93.3, 88.9), _KNOWLEDGE, 25.0),
    _mc("nortruthfulqa_mc_nob", "Truthfulness BM", "ltg/nortruthfulqa_mc", "nb", "validation", None, _TQA,
        (85.7, 77.9, 74.6), _TRUTH, optional_text_fields=("mc2_targets.choices",)),
    _mc("nortruthfulqa_mc_nno", "Truthfulness NN", "ltg/nortruthfulqa_mc", "nn", "validation", None, _TQA,
        (93.0, 82.5, 73.7), _TRUTH, optional_text_fields=("mc2_targets.choices",)),
    _mc("nrk_quiz_qa_nob", "Norwegian knowledge BM", "ltg/nrk_quiz_qa", "nb", "test", None, _MC,
        (70.9, 66.5, 63.7), _KNOWLEDGE),
    _mc("nrk_quiz_qa_nno", "Norwegian knowledge NN", "ltg/nrk_quiz_qa", "nn", "test", None, _MC,
        (69.6, 65.1, 71.9), _KNOWLEDGE),
    # The rest of NorEval (lm-eval 0.4.13's noreval folder); no published numbers in the recipe.
    _mc("norec_sentence", "Sentiment (sentence) BM", "ltg/norec_sentence", "binary", "test", "train",
        ("review", "sentiment"), None, _SENTIMENT, 50.0, metric="f1"),
    _mc("norec_document", "Sentiment (review) BM", "ltg/norec_document", "binary", "test", "train",
        ("review", "sentiment"), None, _SENTIMENT, 50.0, metric="f1"),
    NorEvalTask("ncb", "Grammar pairs (NCB) BM", "hcfa/ncb", "", "train", None, ("correct", "wrong"), None,
                _LANGUAGE, 50.0, prompts=_ONE, text_fields=("correct", "wrong")),
    _gen("noridiom_nob", "Idioms BM", "Sprakbanken/Norwegian_idioms", "", "test", None, _IDIOM, _LANGUAGE, "em",
         metric_max=1.0, text_fields=("idiom_start", "completion", "accepted_completions")),
    _gen("noridiom_nno", "Idioms NN", "Sprakbanken/Norwegian_idioms", "", "test", None, _IDIOM, _LANGUAGE, "em",
         metric_max=1.0, text_fields=("idiom_start", "completion", "accepted_completions")),
    _gen("ask_gec", "Grammar correction BM", "ltg/ask-gec", "", "test", "train", ("source", "correction"),
         _LANGUAGE, "exact_match", metric_max=1.0, external_metric=_GEC),
    _mc("norbelebele", "Reading (Belebele) BM", "facebook/belebele", "nob_Latn", "test", "test", _BELEBELE, None,
        _READING, 25.0),
    _gen("norquad", "Extractive QA (NorQuAD) BM", "ltg/norquad", "", "test", "train",
         ("context", "question", "answers.text"), _READING, "f1", metric_max=1.0, question_field="question"),
    _gen("tatoeba_eng_nob", "Translation EN-BM", "Helsinki-NLP/tatoeba_mt", "eng-nob", "test", "validation",
         _TATOEBA, _TRANSLATION, "bleu", prompts=_FOUR),
    _gen("tatoeba_eng_nno", "Translation EN-NN", "Helsinki-NLP/tatoeba_mt", "eng-nno", "test", "validation",
         _TATOEBA, _TRANSLATION, "bleu", prompts=_FOUR),
    _gen("tatoeba_nob_eng", "Translation BM-EN", "Helsinki-NLP/tatoeba_mt", "eng-nob", "test", "validation",
         _TATOEBA, _TRANSLATION, "bleu", prompts=_FOUR),
    _gen("tatoeba_nno_eng", "Translation NN-EN", "Helsinki-NLP/tatoeba_mt", "eng-nno", "test", "validation",
         _TATOEBA, _TRANSLATION, "bleu", prompts=_FOUR),
    _gen("norsumm_nob", "Summaries BM", "SamiaT/NorSumm", "nb", "test", None, ("article", "summaries"), _SUMMARY,
         "rougeL_max", prompts=(*PROMPTS, "p5")),
    _gen("norsumm_nno", "Summaries NN", "SamiaT/NorSumm", "nn", "test", None, ("article", "summaries"), _SUMMARY,
         "rougeL_max", prompts=(*PROMPTS, "p5")),
    _gen("norrewrite_instruct", "Rewriting instructions BM", "ltg/norrewrite-instruct", "", "test", None,
         _INSTRUCTION, _INSTRUCT, "chrf", prompts=_ONE),
    _gen("norsummarize_instruct", "Summarising instructions BM", "ltg/norsummarize-instruct", "", "test", None,
         _INSTRUCTION, _INSTRUCT, "chrf", prompts=_ONE),
    _gen("nortruthfulqa_gen_nob", "Truthful answers BM", "ltg/nortruthfulqa_gen", "nb", "validation", None,
         _TQA_GEN, _TRUTH, "rougeL_max", question_field="question"),
    _gen("nortruthfulqa_gen_nno", "Truthful answers NN", "ltg/nortruthfulqa_gen", "nn", "validation", None,
         _TQA_GEN, _TRUTH, "rougeL_max", question_field="question"),
]}
NOREVAL_FAMILIES = tuple(CATALOGUE)  # every NorEval family lm-eval ships (evaluate.suite: noreval)
RECIPE_FAMILIES = NOREVAL_FAMILIES[:8]  # the recipe's eight (evaluate.suite: recipe, the default)
SUITES = ("recipe", "noreval")
REFERENCE_AVERAGES = (83.6, 76.8, 73.1)
# Shots per family when the recipe names none; the others run 0-shot (the recipe: 16-shot open-book QA).
DEFAULT_FEWSHOT = {"noropenbookqa_nob": 16, "noropenbookqa_nno": 16}
LOCAL_LAYOUT = ("local layout: <data_dir>/<dataset>/<config>/<split>.jsonl in the HF schema, <config> the HF "
                "dataset_name (nb, nn, eng-nob, binary, ...; no folder for a dataset without one)")


SAMPLE_MARKER = "SAMPLE_SETS.md"  # a local data folder holding this file is demo data, not NorEval
SAMPLE_SETS_MARK = "SAMPLE SETS, NOT NorEval"  # said beside every NorEval number and clean verdict they gave
SMOKE_MARK = "SMOKE TEST"  # said wherever a number from `nortune evaluate --smoke` appears


def is_sample_sets(source: str, root: Path | str | None) -> bool:
    """Whether the NorEval documents are the sample sets written for nortune, not NorEval."""
    return source == "local" and root is not None and (Path(root) / SAMPLE_MARKER).is_file()


def local_noreval_file(root: Path, family: str, split: str) -> Path:
    """A local copy of a family's split: the first of ``<root>/<dataset>/<config>/<split>.jsonl|.json|.parquet``
    that is a file; when none is, the ``.jsonl`` path (callers say it is missing, with ``LOCAL_LAYOUT``)."""
    task = CATALOGUE[family]
    folder = root / task.short / task.config if task.config else root / task.short
    candidates = [folder / f"{split}{ext}" for ext in (".jsonl", ".json", ".parquet")]
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

# --- export: what an Ollama Modelfile may set -----------------------------------------------------

# The PARAMETER names Ollama reads (its api.Options and Runner fields, as its Modelfile docs list them);
# a recipe naming another is refused, so a key can never carry a directive of its own.
OLLAMA_PARAMETERS = frozenset({
    "mirostat", "mirostat_eta", "mirostat_tau", "num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread",
    "num_keep", "num_predict", "repeat_last_n", "repeat_penalty", "presence_penalty", "frequency_penalty",
    "temperature", "seed", "stop", "top_k", "top_p", "min_p", "typical_p", "use_mmap",
})

# --- models: the demo models shipped on PyPI (nortune.models knows how to fetch each) -------------

EMBEDDED_PREFIX = "embedded:"
GEMMA3_270M = "gemma3-270m"
EMBEDDED_MODEL_NAMES = (GEMMA3_270M,)
