"""The ``evaluate`` section: NorEval (the catalogue in ``nortune.config.names``) and extra lm-eval tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from nortune.config.base import GuardTexts, Section, packaged_heldout
from nortune.config.names import ALL_PROMPTS, CATALOGUE, DEFAULT_FEWSHOT, NOREVAL_FAMILIES, RECIPE_FAMILIES, SUITES



def suite_families(suite: str | list[str]) -> list[str]:
    """The families a ``suite`` names: "recipe" (the recipe's 8), "noreval" (all) or the list itself."""
    if isinstance(suite, str):
        return {"recipe": list(RECIPE_FAMILIES), "noreval": list(NOREVAL_FAMILIES)}.get(suite, [suite])
    return list(suite)


def shots_for(num_fewshot: dict[str, int], family: str) -> int:
    """The one rule for few-shot counts: a family that ``num_fewshot`` does not name runs 0-shot."""
    return num_fewshot.get(family, 0)

class PerplexitySection(GuardTexts):
    """Held-out perplexity per language, base vs tuned: the forgetting guard (see docs/evaluate.md)."""

    split: ClassVar[str] = "heldout"
    # text set -> a file with one text per line. A set is named LANGUAGE or SOURCE.LANGUAGE; each is compared and
    # reported on its own, and a finding on any set counts. Default: the packaged held-out sets of two independent
    # sources per language, handwritten.* (written for nortune) and debian.* (Debian's translation catalogues).
    texts: dict[str, Path] = Field(default_factory=packaged_heldout, min_length=1)
    batch_size: int = Field(16, ge=1)
    allow_forgetting: bool = False  # true: a forgetting finding is reported but `nortune run` still exits 0


class EvaluateSection(Section):
    """NorEval through lm-evaluation-harness's own ``noreval`` tasks (see docs/evaluate.md)."""

    # Which NorEval families run: "recipe" (the recipe's 8, the default), "noreval" (every family lm-eval
    # ships, all prompts: 116 tasks) or a list of family names. See docs/evaluate-suite.md.
    suite: str | list[str] = "recipe"
    # The families that run, resolved from `suite`; setting it (the older spelling) is an explicit list.
    tasks: list[str] | None = Field(None, min_length=1)
    # Prompts per family (lm-eval name <family>_<p>); None: every prompt a family has (p0..p4 for the
    # recipe's 8; norsumm has p5, tatoeba p0..p3, ncb and the instruct sets one task).
    prompts: list[Literal[ALL_PROMPTS]] | None = Field(None, min_length=1)  # type: ignore[valid-type]
    # Shots per family; families not named here run 0-shot (the recipe: 16-shot open-book QA).
    num_fewshot: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_FEWSHOT))
    extra_tasks: list[str] = Field(default_factory=list)  # any other lm-eval task names (reported, not averaged)
    source: Literal["hf", "local"] = "hf"
    data_dir: Path | None = None  # local: <data_dir>/<task>/<nb|nn>/<split>.jsonl in the HF schema
    revision: str | None = None   # HF dataset revision
    backend: Literal["nortune", "hf", "vllm"] = "nortune"
    model_args: dict[str, Any] = Field(default_factory=dict)  # extra lm-eval model_args, e.g. tensor_parallel_size
    device: str = "auto"          # auto: cuda when available, else cpu
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None  # None: model.dtype
    # nortune backend: positions per forward; None: 256 on CPU (the sweep in docs/evaluate.md), 4096 on a GPU.
    batch_tokens: int | None = Field(None, ge=16)
    memory_gib: float | None = Field(None, gt=0)  # nortune backend: working memory beyond the weights; None: from the machine
    batch_size: int | Literal["auto"] = 8   # hf / vllm backends
    tuned: Literal["adapter", "merged"] = "adapter"  # tuned = base + train/adapter_lora, or train/merged
    limit: int | None = Field(None, ge=1)   # items per task (smoke runs; results are then not comparable)
    # A smoke test (`nortune evaluate --smoke`): it shows the evaluation runs end to end; every output says so,
    # and no comparison is drawn from it.
    smoke: bool = False
    fewshot_seed: int = 1234                # lm-eval's default
    metric: Literal["acc", "acc_norm"] = "acc"  # headline metric (truthfulness has acc only)
    # Prompts through the model's chat template (lm-eval's apply_chat_template): auto = on for an
    # instruction-tuned model (its name says -it / instruct / chat and its tokenizer has a template),
    # off for a base model such as the embedded gemma3-270m (docs/evaluate-card.md).
    chat_template: Literal["auto", "on", "off"] = "auto"
    fewshot_as_multiturn: bool = True       # with the chat template: each shot is a user/model turn pair
    system_instruction: str | None = None   # with the chat template: a system turn (lm-eval's system_instruction)
    bootstrap_samples: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    # --compare fails (exit 1) on a significant regression of a task or of the headline.
    fail_on_regression: bool = True
    # Held-out perplexity per language (None: off); its intervals use bootstrap_samples and confidence.
    perplexity: PerplexitySection | None = None

    @field_validator("chat_template", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        """YAML 1.1 reads a bare on / off as true / false."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("suite", mode="before")
    @classmethod
    def _known_suite(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in SUITES:
                raise ValueError(f"unknown suite {value!r}; known: {list(SUITES)} or a list of NorEval families")
        elif isinstance(value, (list, tuple)):
            _check_families(list(value))
        return value

    @field_validator("tasks")
    @classmethod
    def _known_families(cls, value: list[str] | None) -> list[str] | None:
        return _check_families(value) if value is not None else None

    @field_validator("num_fewshot")
    @classmethod
    def _fewshot_keys(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = [t for t in value if t not in NOREVAL_FAMILIES]
        if unknown:
            raise ValueError(f"unknown NorEval task(s) {unknown}; known: {list(NOREVAL_FAMILIES)}")
        if any(n < 0 for n in value.values()):
            raise ValueError("shots cannot be negative")
        return value

    @property
    def families(self) -> list[str]:
        """The families that run: ``tasks`` when stated, else those of ``suite`` (derived here, never written)."""
        return list(self.tasks) if self.tasks is not None else suite_families(self.suite)

    @model_validator(mode="after")
    def _suite_and_tasks_agree(self) -> "EvaluateSection":
        if self.tasks is not None and "suite" in self.model_fields_set and self.tasks != suite_families(self.suite):
            raise ValueError(f"suite {self.suite!r} and tasks {self.tasks} disagree; set one of them")
        zero_shot = [f for f, n in self.num_fewshot.items() if n and CATALOGUE[f].fewshot_split is None]
        if zero_shot:
            raise ValueError(f"num_fewshot: {zero_shot} run 0-shot only (lm-eval's task has no split to draw "
                             "examples from)")
        lacking = {f: list(CATALOGUE[f].prompts) for f in self.families
                   if self.prompts is not None and CATALOGUE[f].prompts and not set(self.prompts) & set(CATALOGUE[f].prompts)}
        if lacking:  # a family would run no task at all: say so rather than drop it
            raise ValueError(f"prompts {self.prompts}: these families have none of them: {lacking}")
        return self

    @model_validator(mode="after")
    def _local_needs_dir(self) -> "EvaluateSection":
        if self.source == "local" and (self.data_dir is None or not Path(self.data_dir).is_dir()):
            raise ValueError(f"source is local but data_dir is not a folder: {self.data_dir}")
        return self


def _check_families(value: list[str]) -> list[str]:
    unknown = [t for t in value if t not in NOREVAL_FAMILIES]
    if unknown:
        raise ValueError(f"unknown NorEval task(s) {unknown}; known: {list(NOREVAL_FAMILIES)} "
                         "(other lm-eval tasks go in extra_tasks)")
    if not value:
        raise ValueError("an empty list of families")
    return value
