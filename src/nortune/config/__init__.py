"""Typed recipe config: one section per stage, validated before any work starts.

A recipe is a YAML file. Relative paths in it are read against the current working
directory (run nortune from the project root, as the shipped recipes assume). Dotted
overrides (``train.lr=1e-5``) are applied before validation, so they are checked the
same way as the file.

The package is a leaf: it imports nothing from nortune except its own modules and
``nortune.errors`` (the one exception, deliberate: ConfigError is the error contract every
stage and the CLI share, and ``nortune.errors`` imports nothing). Facts that config validates
against and stages act on (NorEval tasks, prompts and shots, curate buckets, GGUF types,
embedded models) live in ``nortune.config.names``, which the stages import.

- ``base``: the strict ``Section`` model, file checks, ``load_validated``;
- ``yaml_io``: reading the YAML and overrides, phrasing errors;
- one module per section: ``model`` (model + adapter), ``train``, ``preference``, ``plan``,
  ``curate``, ``decontam``, ``evaluate``, ``export``;
- here: ``Recipe`` (the sections together, and the rules between them) and ``load_recipe``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import yaml
from pydantic import Field, field_validator, model_validator

from nortune.config.base import PlainName, Section, load_validated
from nortune.config.curate import CurateDedup, CurateFilters, CurateSection, CurateSource, ExecutorSection
from nortune.config.decontam import DecontamExtra, DecontamNormalize, DecontamSection, follow_evaluate
from nortune.config.evaluate import EvaluateSection
from nortune.config.export import ExportCard, ExportModelfile, ExportSection, ExportThreshold, ExportVerify
from nortune.config.model import AdapterSection, LayerSelection, ModelSection, parse_index_ranges
from nortune.config.names import CURATE_BUCKETS, EMBEDDED_PREFIX
from nortune.config.plan import PlanSection
from nortune.config.preference import PREFERENCE_LOSSES, PreferenceSection, SyntheticPairs
from nortune.config.train import TrainSection
from nortune.errors import ConfigError

__all__ = [
    "CURATE_BUCKETS", "EMBEDDED_PREFIX", "PREFERENCE_LOSSES", "AdapterSection", "ConfigError", "CurateDedup",
    "CurateFilters", "CurateSection", "CurateSource", "DecontamExtra", "DecontamNormalize", "DecontamSection",
    "EvaluateSection", "ExecutorSection", "ExportCard", "ExportModelfile", "ExportSection", "ExportThreshold",
    "ExportVerify", "LayerSelection", "ModelSection", "PlanSection", "PreferenceSection", "Recipe", "Section",
    "SyntheticPairs", "TrainSection", "load_recipe", "parse_index_ranges",
]


class Recipe(Section):
    name: PlainName  # the run folder's name under runs_dir
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

    @field_validator("runs_dir")
    @classmethod
    def _runs_dir_usable(cls, value: Path) -> Path:
        problem = runs_dir_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _preference_one_source(self) -> "Recipe":
        if self.preference.data is not None and self.preference.hf_dataset is not None:
            raise ValueError("preference: give data or hf_dataset, not both")
        return self

    @model_validator(mode="after")
    def _decontam_is_evaluate(self) -> "Recipe":
        follow_evaluate(self.decontam, self.evaluate)  # refuses a stated difference now, at load
        return self

    @model_validator(mode="after")
    def _watch_never_on_heldout(self) -> "Recipe":
        """Stopping or choosing a step on the held-out texts that evaluate reports would select on them."""
        watch, guard = self.train.watch, self.evaluate.perplexity
        if watch is not None and guard is not None:
            held = {Path(p).resolve(): name for name, p in guard.texts.items()}
            shared = [f"{name} ({path})" for name, path in watch.texts.items() if Path(path).resolve() in held]
            if shared:
                raise ValueError(f"train.watch.texts: {', '.join(shared)} is also held out by evaluate.perplexity; "
                                 "the watch takes development texts (by default the packaged dev split)")
        return self

    def decontam_test_side(self) -> DecontamSection:
        """The decontam settings the check runs with: its test side follows evaluate (``follow_evaluate``)."""
        return follow_evaluate(self.decontam, self.evaluate)

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name

    def section_fingerprint(self, *sections: str) -> str:
        """Stable hash of the named sections: a stage reruns only when one of them changed. An optional setting
        left unset (None) is left out, so a release that adds one (``train.watch``) leaves finished runs current."""
        payload = {name: getattr(self, name).model_dump(mode="json", exclude_none=True) for name in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def runs_dir_problem(path: Path) -> str | None:
    """Why runs can not go under ``path`` (a file, or a folder that cannot be created or written), else None.

    Checked when the recipe loads, so the mistake is one line naming runs_dir, not an OSError
    from the first stage that writes (after minutes of work, in a worker process).
    """
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    probe = path
    while not probe.exists() and probe.parent != probe:  # the nearest existing path above: created from there
        probe = probe.parent
    if not probe.is_dir():
        return f"{path} cannot be created: {probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{path} is read-only" if probe == path else f"{path} cannot be created: {probe} is read-only"
    return None


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe; every problem is reported with its key path and origin."""
    return load_validated(path, overrides, Recipe)
