"""What a trained model depends on, so every stage that uses one can tell a current model from a stale one.

The train and preference stages make models; evaluate, export and preference (on top of train)
use them. The fingerprints of the two model-making stages live here, not in their stages, so a
later stage can recompute them without importing the training code (``nortune.train`` pulls in
TRL's trainers): the train and preference stages take their ``fingerprint`` from here too, so each
is worked out in one place. ``require_current_model`` is the one check every user runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nortune.curate import training_data
from nortune.jsonl import DataError
from nortune.runs import RESOLVED_RECIPE, RunLayout, inputs_fingerprint, read_manifest, require_complete


def train_fingerprint(recipe: Any) -> dict[str, Any]:
    """What decides whether a finished train stage is still current: its recipe sections and data."""
    watched = list(recipe.train.watch.texts.values()) if recipe.train.watch is not None else []
    return {"recipe": recipe.section_fingerprint("model", "adapter", "train"),
            "inputs": inputs_fingerprint([training_data(recipe, recipe.train.data), *watched])}


def preference_fingerprint(recipe: Any) -> dict[str, Any]:
    """The recipe sections, the finished (and current) SFT run it builds on, and the pairs file's hash."""
    layout = RunLayout.of(recipe)
    sft_dir = layout.model_dir("train")
    sft_manifest = read_manifest(sft_dir)
    if sft_manifest is None:
        raise DataError(f"the preference stage needs a finished SFT run in {sft_dir}; run `nortune train` first")
    require_current_model(recipe, "train", {built_on: "the SFT adapter" for built_on in (
        layout.adapter("train"), layout.adapter_init("train"), layout.adapter_lora("train"))})
    pairs = [recipe.preference.data] if recipe.preference.data is not None else []
    return {"recipe": recipe.section_fingerprint("model", "adapter", "train", "preference", "decontam"),
            "sft": sft_manifest["fingerprint"], "sft_finished": sft_manifest["finished"],
            "inputs": inputs_fingerprint(pairs)}


def require_current_model(recipe: Any, stage: str, outputs: dict[Path, str]) -> None:
    """Accept outputs of ``stage`` (train or preference), each ``{path: what}``, only as its manifest records
    them, and only when that stage ran with what the current recipe asks for (the same sections and data),
    never stale. The stage's fingerprint is worked out once for all of them."""
    current = (preference_fingerprint if stage == "preference" else train_fingerprint)(recipe)
    directory = RunLayout.of(recipe).model_dir(stage)
    for path, what in outputs.items():
        require_complete(directory, path, what, current,
                         accept=f"use the recipe it was made with ({directory / RESOLVED_RECIPE})")
