"""Typed recipe config: one section per stage, validated before any work starts.

A recipe is a YAML file. Relative paths in it are read against the current working
directory (run nortune from the project root, as the shipped recipes assume). Dotted
overrides (``train.lr=1e-5``) are applied before validation, so they are checked the
same way as the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nortune.errors import ConfigError  # noqa: F401 - callers import it from here


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _existing_file(value: Path | None) -> Path | None:
    if value is not None and not Path(value).expanduser().is_file():
        raise ValueError(f"file not found: {value}")
    return value


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
EMBEDDED_PREFIX = "embedded:"


class ModelSection(Section):
    # A local HF folder, a .gguf file, a hub id (owner/name) or ``embedded:gemma3-270m``.
    source: str = "embedded:gemma3-270m"
    # A config.json (or folder holding one) that `plan` can read when the weights are not local.
    config: Path | None = None
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @field_validator("source")
    @classmethod
    def _source_resolvable(cls, value: str) -> str:
        if value.startswith(EMBEDDED_PREFIX):
            from nortune.models import EMBEDDED_MODELS  # light module, no torch

            name = value[len(EMBEDDED_PREFIX):]
            if name not in EMBEDDED_MODELS:
                raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
            return value
        path = Path(value).expanduser()
        looks_local = value.endswith(".gguf") or value.startswith(("/", "./", "../", "~"))
        if path.exists():
            if path.is_dir() and not (path / "config.json").is_file():
                raise ValueError(f"{value} is a folder without config.json")
            return value
        if looks_local or (path.parent != Path(".") and path.parent.is_dir()):  # runs/x is no hub id
            raise ValueError(f"path not found: {value}")
        if not _HUB_ID.match(value):
            raise ValueError(f"{value!r} is neither an existing path nor a hub id like owner/name")
        return value

    @field_validator("config")
    @classmethod
    def _config_exists(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        path = value.expanduser()
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ValueError(f"model config not found: {value}")
        return path


class LayerSelection(Section):
    """Which decoder layers get adapters: by layer type (Gemma 2/3/4) or by index ranges."""

    layer_types: list[str] | None = None
    # Index ranges such as "0-9,12,20-29" (inclusive); negative indices count from the end.
    indices: str | None = None

    @field_validator("indices")
    @classmethod
    def _indices_parse(cls, value: str | None) -> str | None:
        if value is not None:
            parse_index_ranges(value, num_layers=None)
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> "LayerSelection":
        if self.layer_types is not None and self.indices is not None:
            raise ValueError("give layer_types or indices, not both")
        if self.layer_types is not None and not self.layer_types:
            raise ValueError("layer_types is empty: no layer would be trained")
        return self


def parse_index_ranges(spec: str, num_layers: int | None) -> list[int]:
    """Parse "0-3,7,-2--1" into sorted unique indices; with num_layers, resolve and bound them."""
    out: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        if not part:
            raise ValueError(f"empty item in index ranges {spec!r}")
        match = re.fullmatch(r"(-?\d+)(?:-(-?\d+))?", part)
        if not match:
            raise ValueError(f"cannot read {part!r} in index ranges {spec!r}")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if num_layers is not None:
            lo, hi = (i + num_layers if i < 0 else i for i in (lo, hi))
            if not (0 <= lo < num_layers and 0 <= hi < num_layers):
                raise ValueError(f"{part!r} is outside the model's {num_layers} layers")
        if (lo >= 0) == (hi >= 0) and hi < lo:
            raise ValueError(f"range {part!r} runs backwards")
        out.update(range(lo, hi + 1))
    return sorted(out)


class AdapterSection(Section):
    init: Literal["pissa", "lora"] = "pissa"
    # PiSSA's SVD: "full" is exact; "fast" is randomised (torch.svd_lowrank) with svd_niter iterations.
    svd: Literal["full", "fast"] = "full"
    svd_niter: int = Field(16, ge=1)
    r: int = Field(8, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)
    layers: LayerSelection = Field(default_factory=LayerSelection)


class TrainSection(Section):
    # sft: supervised fine-tune. dpo: preference optimisation on top of the SFT run (see `preference`).
    stage: Literal["sft", "dpo"] = "sft"
    # Chat JSONL (one {"messages": [...]} per line). None: the curate stage's output in the run folder.
    data: Path | None = None
    lr: float = Field(5e-6, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    neftune_noise_alpha: float | None = Field(5.0, ge=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1)  # -1: run `epochs`
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_seq_len: int = Field(2048, ge=8)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    seed: int = 42
    packing: bool = False
    # None: on for GPUs (memory), off on CPU (small runs; measured no speed difference on the demo model).
    gradient_checkpointing: bool | None = None
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(100, ge=1)
    save_total_limit: int = Field(2, ge=1)
    merge: bool = False  # also write a merged full model into the run folder
    # Multi-GPU strategy for `--gpus N`; ZeRO-3 is refused for PiSSA (see nortune.launch).
    distributed: Literal["fsdp", "deepspeed_zero3"] = "fsdp"
    # cpu: train on CPU processes (gloo); cuda: GPUs (NCCL); auto: cuda when torch sees a GPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("data")
    @classmethod
    def _data_exists(cls, value: Path | None) -> Path | None:
        return _existing_file(value)


PREFERENCE_LOSSES = ("sigmoid", "ipo", "hinge", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard",
                     "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")


class SyntheticPairs(Section):
    """The recipe's failed variant, reproducible: chosen = curated answer, rejected = base model's answer."""

    enabled: bool = False
    # Chat JSONL whose last assistant turns become `chosen`; None: train.data, else the curate output.
    source: Path | None = None
    max_pairs: int = Field(64, ge=1)
    max_new_tokens: int = Field(96, ge=1)

    @field_validator("source")
    @classmethod
    def _source_exists(cls, value: Path | None) -> Path | None:
        return _existing_file(value)


class PreferenceSection(Section):
    """IPO/DPO after SFT (train.stage: dpo), starting from the SFT run's adapter."""

    # JSONL or Parquet with prompt / chosen / rejected (chat message lists or plain strings),
    # or a HF dataset id with those columns.
    data: Path | None = None
    hf_dataset: str | None = None
    hf_split: str = "train"
    loss_type: Literal[PREFERENCE_LOSSES] = "ipo"  # type: ignore[valid-type]
    beta: float = Field(0.1, gt=0)
    lr: float = Field(5e-7, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1)
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_len: int = Field(1024, ge=8)
    # continue: keep training the SFT adapter; stack: merge SFT, then train a new adapter on top.
    adapter: Literal["continue", "stack"] = "continue"
    merge: bool = False
    synthetic: SyntheticPairs = Field(default_factory=SyntheticPairs)

    @field_validator("data")
    @classmethod
    def _data_exists(cls, value: Path | None) -> Path | None:
        return _existing_file(value)

    @property
    def configured(self) -> bool:
        return self.data is not None or self.hf_dataset is not None or self.synthetic.enabled


class PlanSection(Section):
    """Inputs of the memory estimate: the shape of one training micro-batch and the GPUs."""

    batch_size: int = Field(1, ge=1)
    seq_len: int = Field(2048, ge=1)
    max_gpus: int = Field(8, ge=1)
    gpu_memory_gib: float = Field(80.0, gt=0)
    gradient_checkpointing: bool = True


class DecontamExtra(Section):
    """An extra benchmark given as a file (JSONL or Parquet) with the fields that hold test text."""

    name: str = Field(pattern=r"^[\w.:/-]+$")
    path: Path
    fields: list[str] = Field(min_length=1)
    id_field: str | None = None

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: Path) -> Path:
        return _existing_file(value)  # type: ignore[return-value]


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
    methods: list[Literal["exact", "substring", "char_ngram", "word_ngram", "question"]] = Field(
        default_factory=lambda: ["exact", "substring", "char_ngram", "word_ngram", "question"], min_length=1)
    char_ngrams: list[int] = Field(default_factory=lambda: [50, 30], min_length=1)
    word_ngram: int = Field(13, ge=1)
    substring_min_chars: int = Field(30, ge=8)
    question_min_words: int = Field(4, ge=2)  # a whole test question of at least this many words, inside a record
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


CURATE_BUCKETS = ("nb", "nn", "en", "other", "mixed", "translation")


class CurateSource(Section):
    """One raw source: a local JSONL/Parquet/CSV/text file or a HF dataset id."""

    name: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*$")
    path: Path | None = None
    hf_dataset: str | None = None  # owner/name on the hub (real loader; streams)
    hf_config: str | None = None
    hf_split: str = "train"
    hf_revision: str | None = None
    format: Literal["auto", "jsonl", "parquet", "csv", "text"] = "auto"
    # How a record becomes chat messages; "auto" picks by the fields present.
    mapping: Literal["auto", "messages", "instruction", "prompt_response", "text"] = "auto"
    # Rename the source's fields to the canonical ones, e.g. {output: answer}: canonical <- source.
    fields: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    quota: int | None = Field(None, ge=0)  # at most this many output records from this source

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: Path | None) -> Path | None:
        return _existing_file(value)

    @field_validator("hf_dataset")
    @classmethod
    def _hub_id(cls, value: str | None) -> str | None:
        if value is not None and not _HUB_ID.match(value):
            raise ValueError(f"{value!r} is not a hub dataset id like owner/name")
        return value

    @field_validator("fields")
    @classmethod
    def _canonical_fields(cls, value: dict[str, str]) -> dict[str, str]:
        known = {"messages", "instruction", "input", "output", "prompt", "response", "text",
                 "system", "role", "content"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown canonical field(s) {unknown}; known: {sorted(known)}")
        return value

    @model_validator(mode="after")
    def _one_origin(self) -> "CurateSource":
        if (self.path is None) == (self.hf_dataset is None):
            raise ValueError("give exactly one of path or hf_dataset")
        return self


class CurateFilters(Section):
    min_chars: int = Field(20, ge=0)  # whole record, all turns
    max_chars: int = Field(20_000, ge=1)
    min_answer_chars: int = Field(2, ge=0)  # last assistant turn
    max_repetition: float = Field(0.35, ge=0, le=1)  # share of repeated word 3-grams
    boilerplate: list[str] = Field(default_factory=lambda: [
        r"(?i)\bas an ai (language )?model\b", r"(?i)\bsom en ki-?(språk)?modell\b",
        r"(?i)\bsom ein ki-?(språk)?modell\b", r"(?i)lorem ipsum", r"(?i)\bclick here\b",
        r"(?i)\bklikk her\b"])
    truncated: bool = True  # drop answers that stop mid-sentence (no closing punctuation)

    @field_validator("boilerplate")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None
        return value


class CurateDedup(Section):
    # datatrove's MinHash LSH: bands x (num_perm / bands) rows; a pair sharing one band is a near duplicate.
    # FineWeb's 14 x 8 catches Jaccard 0.8 with p = 0.92 and 0.5 with p = 0.05 (S-curve midpoint ~0.72).
    near: bool = True
    num_perm: int = Field(112, ge=8, le=512)
    bands: int = Field(14, ge=1)
    shingle: int = Field(5, ge=1)  # words per shingle

    @model_validator(mode="after")
    def _bands_divide(self) -> "CurateDedup":
        if self.num_perm % self.bands:
            raise ValueError(f"bands ({self.bands}) must divide num_perm ({self.num_perm})")
        return self


class ExecutorSection(Section):
    """Where curate and decontam run (datatrove executors): one setting for both stages.

    local: ``workers`` processes on this machine (0: all cores). slurm: one array task per
    worker on ``partition``; the run folder must be on a filesystem every node sees.
    ray: datatrove's Ray executor against ``address`` (None: start a local Ray instance).
    """

    type: Literal["local", "slurm", "ray"] = "local"
    workers: int = Field(0, ge=0)  # 0: every core here (local), else the number of shards/tasks
    partition: str | None = None  # slurm
    time: str = "04:00:00"  # slurm wall time per task
    cpus_per_task: int = Field(1, ge=1)  # slurm
    mem_per_cpu_gb: int = Field(4, ge=1)  # slurm
    sbatch_args: dict[str, str] = Field(default_factory=dict)  # slurm: extra #SBATCH options
    address: str | None = None  # ray: "auto" or ray://host:port; None starts a local instance

    @model_validator(mode="after")
    def _slurm_needs_partition(self) -> "ExecutorSection":
        if self.type == "slurm" and not self.partition:
            raise ValueError("executor type slurm needs a partition")
        return self


class CurateSection(Section):
    sources: list[CurateSource] = Field(default_factory=list)
    executor: ExecutorSection = Field(default_factory=ExecutorSection)  # decontam runs on it too
    # Share of the output per bucket (nb, nn, en, other, mixed, translation); missing = 0.
    shares: dict[str, float] = Field(default_factory=lambda: {"nb": 0.67, "nn": 0.31, "en": 0.02,
                                                                "translation": 0.0})
    target_size: int | None = Field(None, ge=1)  # None: the largest set the shares allow
    seed: int = 42
    strict: bool = False  # any malformed record is fatal
    allow_shortfall: bool = False  # infeasible mix: write the closest feasible one instead of failing
    quality_order: bool = True  # pick the best-scoring records first (else seeded random)
    min_confidence: float = Field(0.5, ge=0, le=1)  # langid below this: dropped as lang:uncertain
    filters: CurateFilters = Field(default_factory=CurateFilters)
    dedup: CurateDedup = Field(default_factory=CurateDedup)

    @field_validator("shares")
    @classmethod
    def _shares_valid(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(CURATE_BUCKETS))
        if unknown:
            raise ValueError(f"unknown bucket(s) {unknown}; known: {list(CURATE_BUCKETS)}")
        if any(v < 0 for v in value.values()):
            raise ValueError("shares cannot be negative")
        total = sum(value.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"shares must add up to 1 (they add up to {total:g})")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> "CurateSection":
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {dupes}")
        return self


_NOREVAL_FAMILIES = ("norcommonsenseqa_nob", "norcommonsenseqa_nno", "noropenbookqa_nob", "noropenbookqa_nno",
                     "nortruthfulqa_mc_nob", "nortruthfulqa_mc_nno", "nrk_quiz_qa_nob", "nrk_quiz_qa_nno")


class EvaluateSection(Section):
    """NorEval through lm-evaluation-harness's own ``noreval`` tasks (see docs/evaluate.md)."""

    # The 8 task families of the recipe; each runs with every prompt in `prompts` (lm-eval name <family>_<p>).
    tasks: list[str] = Field(default_factory=lambda: list(_NOREVAL_FAMILIES), min_length=1)
    prompts: list[Literal["p0", "p1", "p2", "p3", "p4"]] = Field(
        default_factory=lambda: ["p0", "p1", "p2", "p3", "p4"], min_length=1)
    # Shots per family; families not named here run 0-shot (the recipe: 16-shot open-book QA).
    num_fewshot: dict[str, int] = Field(default_factory=lambda: {"noropenbookqa_nob": 16, "noropenbookqa_nno": 16})
    extra_tasks: list[str] = Field(default_factory=list)  # any other lm-eval task names (reported, not averaged)
    source: Literal["hf", "local"] = "hf"
    data_dir: Path | None = None  # local: <data_dir>/<task>/<nb|nn>/<split>.jsonl in the HF schema
    revision: str | None = None   # HF dataset revision
    backend: Literal["nortune", "hf", "vllm"] = "nortune"
    model_args: dict[str, Any] = Field(default_factory=dict)  # extra lm-eval model_args, e.g. tensor_parallel_size
    device: str = "auto"          # auto: cuda when available, else cpu
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None  # None: model.dtype
    batch_tokens: int = Field(1024, ge=16)  # nortune backend: positions per forward (docs/evaluate.md: the sweep)
    memory_gib: float | None = Field(None, gt=0)  # nortune backend: working memory beyond the weights; None: from the machine
    batch_size: int | Literal["auto"] = 8   # hf / vllm backends
    tuned: Literal["adapter", "merged"] = "adapter"  # tuned = base + train/adapter_lora, or train/merged
    limit: int | None = Field(None, ge=1)   # items per task (smoke runs; results are then not comparable)
    fewshot_seed: int = 1234                # lm-eval's default
    metric: Literal["acc", "acc_norm"] = "acc"  # headline metric (truthfulness has acc only)
    bootstrap_samples: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    # --compare fails (exit 1) on a significant regression of a task or of the headline.
    fail_on_regression: bool = True

    @field_validator("tasks")
    @classmethod
    def _known_families(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in _NOREVAL_FAMILIES]
        if unknown:
            raise ValueError(f"unknown NorEval task(s) {unknown}; known: {list(_NOREVAL_FAMILIES)} "
                             "(other lm-eval tasks go in extra_tasks)")
        return value

    @field_validator("num_fewshot")
    @classmethod
    def _fewshot_keys(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = [t for t in value if t not in _NOREVAL_FAMILIES]
        if unknown:
            raise ValueError(f"unknown NorEval task(s) {unknown}; known: {list(_NOREVAL_FAMILIES)}")
        if any(n < 0 for n in value.values()):
            raise ValueError("shots cannot be negative")
        return value

    @model_validator(mode="after")
    def _local_needs_dir(self) -> "EvaluateSection":
        if self.source == "local" and (self.data_dir is None or not Path(self.data_dir).is_dir()):
            raise ValueError(f"source is local but data_dir is not a folder: {self.data_dir}")
        return self


class ExportThreshold(Section):
    """When a GGUF file passes: top-1 next-token agreement with the HF model and perplexity drift."""

    min_top1: float | None = Field(None, ge=0, le=1)  # share of positions with the same argmax token
    ppl_tolerance: float | None = Field(None, ge=0)  # |ppl_gguf / ppl_hf - 1| at most this


def _export_thresholds() -> dict[str, ExportThreshold]:
    exact = ExportThreshold(min_top1=0.99, ppl_tolerance=0.01)
    return {"F32": exact, "F16": exact, "BF16": exact, "Q8_0": exact,
            "Q4_K_M": ExportThreshold(min_top1=0.85, ppl_tolerance=0.05)}


class ExportVerify(Section):
    """Each GGUF file is loaded in llama.cpp and compared with the merged HF model on held-out text."""

    enabled: bool = True
    text: Path = Path("data/demo/heldout_no.txt")  # held-out Norwegian text, never trained on
    max_tokens: int = Field(2048, ge=16)  # tokens of the text scored (windows of `window`)
    window: int = Field(256, ge=8)
    threads: int | None = Field(None, ge=1)  # None: all cores
    # The transformers reference; bfloat16 halves its memory for big models (on a GPU when there is one).
    reference_dtype: Literal["float32", "bfloat16"] = "float32"
    # Per llama.cpp type; types not listed must meet `default`.
    thresholds: dict[str, ExportThreshold] = Field(default_factory=_export_thresholds)
    default: ExportThreshold = Field(default_factory=lambda: ExportThreshold(ppl_tolerance=0.10))
    # Share of held-out paragraphs that llama.cpp's own tokenizer (from the GGUF) splits into exactly
    # the transformers ids; below it the file fails, whatever its scores on the shared ids.
    min_tokenizer_match: float = Field(1.0, ge=0, le=1)

    @field_validator("text")
    @classmethod
    def _text_exists(cls, value: Path) -> Path:
        return _existing_file(value)  # type: ignore[return-value]


class ExportModelfile(Section):
    """Ollama Modelfile: which GGUF it points at and its sampling parameters."""

    gguf_type: str = "Q4_K_M"
    parameters: dict[str, float | int | str] = Field(default_factory=lambda: {
        "temperature": 1.0, "top_k": 64, "top_p": 0.95, "num_ctx": 4096})
    system: str | None = None


class ExportCard(Section):
    model_name: str | None = None  # None: the recipe name
    license: str = "apache-2.0"
    language: list[str] = Field(default_factory=lambda: ["no", "nb", "nn"])


class ExportSection(Section):
    """Merged safetensors + GGUF files made and quantised by llama.cpp's own tools (see docs/export.md)."""

    # Which model to ship: train (SFT), preference (SFT + preference), or auto: preference when the
    # recipe configures a preference stage, else train.
    source: Literal["auto", "train", "preference"] = "auto"
    # Dtype of the merged checkpoint; "auto" keeps the base checkpoint's own dtype.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # llama.cpp types to ship, e.g. Q8_0, Q4_K_M, Q6_K, F16, BF16 (names as llama-quantize spells them).
    gguf_types: list[str] = Field(default_factory=lambda: ["Q8_0", "Q4_K_M"])
    # The full-precision GGUF that llama.cpp's converter writes and the quantiser reads.
    intermediate: Literal["F32", "F16", "BF16"] = "BF16"
    keep_intermediate: bool = False
    verify: ExportVerify = Field(default_factory=ExportVerify)
    modelfile: ExportModelfile = Field(default_factory=ExportModelfile)
    card: ExportCard = Field(default_factory=ExportCard)

    @field_validator("gguf_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        from nortune.export.formats import check_types  # light module, no llama.cpp

        return check_types(value)

    @model_validator(mode="after")
    def _modelfile_type_exported(self) -> "ExportSection":
        if self.modelfile.gguf_type.upper() not in self.gguf_types:
            raise ValueError(f"modelfile.gguf_type {self.modelfile.gguf_type!r} is not in gguf_types "
                             f"{self.gguf_types}")
        return self


class Recipe(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*$")
    # Where runs go; the run folder is <runs_dir>/<name>.
    runs_dir: Path = Path("runs")
    model: ModelSection = Field(default_factory=ModelSection)
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    train: TrainSection = Field(default_factory=TrainSection)
    preference: PreferenceSection = Field(default_factory=PreferenceSection)
    plan: PlanSection = Field(default_factory=PlanSection)
    curate: CurateSection = Field(default_factory=CurateSection)
    decontam: DecontamSection = Field(default_factory=DecontamSection)
    export: ExportSection = Field(default_factory=ExportSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)

    @model_validator(mode="after")
    def _preference_has_pairs(self) -> "Recipe":
        pref = self.preference
        if pref.data is not None and pref.hf_dataset is not None:
            raise ValueError("preference: give data or hf_dataset, not both")
        if self.train.stage == "dpo" and not pref.configured:
            raise ValueError("preference.data: required when train.stage is dpo "
                             "(or set preference.hf_dataset, or preference.synthetic.enabled to build pairs)")
        return self

    @model_validator(mode="after")
    def _decontam_is_evaluate(self) -> "Recipe":
        """decontam checks the very documents evaluate scores: fill its test side from evaluate, refuse a difference."""
        dc, ev = self.decontam, self.evaluate
        for key, ours, theirs in (("noreval_source", dc.noreval_source, ev.source),
                                  ("noreval_dir", dc.noreval_dir, ev.data_dir),
                                  ("noreval_revision", dc.noreval_revision, ev.revision)):
            if ours is not None and (Path(ours) != Path(theirs) if key == "noreval_dir" and theirs else ours != theirs):
                raise ValueError(f"decontam.{key} is {ours} but evaluate scores {theirs}: the contamination check "
                                 f"must read the documents evaluate scores (remove decontam.{key}; it follows evaluate)")
        unknown = [t for t in dc.tasks or [] if t not in _NOREVAL_FAMILIES]
        missing = [t for t in ev.tasks if dc.tasks is not None and t not in dc.tasks]
        if unknown or missing:
            raise ValueError(f"decontam.tasks: {'unknown ' + str(unknown) if unknown else ''}"
                             f"{'; ' if unknown and missing else ''}"
                             f"{f'evaluate scores {missing} but they are not checked' if missing else ''}")
        values = {"noreval_dir": ev.data_dir if ev.source == "local" else None, "noreval_revision": ev.revision,
                  "noreval_source": ev.source, "tasks": list(dc.tasks or ev.tasks)}
        for key, value in values.items():  # dir before source: no half-filled state is ever validated
            setattr(dc, key, value)
        if ev.source == "local":
            from nortune.evaluate.tasks import CATALOGUE, local_file

            for family in dc.tasks:
                try:
                    local_file(Path(ev.data_dir), CATALOGUE[family], CATALOGUE[family].split)
                except ValueError as exc:  # DataError: the file evaluate would score and decontam check is missing
                    raise ValueError(f"evaluate.data_dir (task {family}): {exc}") from None
        return self

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name

    def section_fingerprint(self, *sections: str) -> str:
        """Stable hash of the named sections: a stage reruns only when one of them changed."""
        payload = {name: getattr(self, name).model_dump(mode="json") for name in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe; every problem is reported with its key path and origin."""
    from nortune.recipe_yaml import apply_override, format_errors, read_yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    tree = read_yaml(path) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for item in overrides:
        apply_override(tree, item)
    try:
        return Recipe.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_errors(str(path), exc, overrides, Recipe)) from None
