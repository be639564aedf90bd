"""Adapter plan from a model config alone: which modules get LoRA, how many parameters, how much memory.

The model is instantiated on the meta device (no weights, no memory), so a 31B plan takes
seconds on a laptop. Training uses the plan's exact module names as PEFT targets, so what
`plan` prints is what `train` adapts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from nortune.config import ConfigError, LayerSelection, Recipe, parse_index_ranges
from nortune.runner import Stage, StageContext, StageResult, run_stage
from nortune.runs import Options, RunLayout, atomic_write_text, require_complete

_LAYER_NAME = re.compile(r"^(?P<prefix>.*\.layers)\.(?P<index>\d+)\.(?P<rest>.+)$")
GIB = 1024**3


log = logging.getLogger(__name__)

@dataclass
class AdaptedModule:
    name: str
    in_features: int
    out_features: int
    lora_params: int


@dataclass
class LayerPlan:
    index: int
    layer_type: str | None
    selected: bool
    adapted: list[AdaptedModule] = field(default_factory=list)
    # Target names this layer does not adapt, each with the reason.
    excluded: dict[str, str] = field(default_factory=dict)


@dataclass
class MemoryEstimate:
    gpus: int
    weights_gib: float
    adapter_and_optimizer_gib: float
    activations_gib: float
    logits_gib: float
    overhead_gib: float
    total_gib: float
    fits: bool
    # Host RAM of one node running these GPUs: every rank loads the full bf16 weights before
    # FSDP shards them (PiSSA's SVD needs them; see docs/train.md), plus its runtime.
    host_ram_gib: float = 0.0


@dataclass
class AdapterPlan:
    model_type: str
    num_layers: int
    total_params: int
    trainable_params: int
    layers: list[LayerPlan]
    frozen_3d_params: int
    notes: list[str]
    memory: list[MemoryEstimate]

    @property
    def trainable_share(self) -> float:
        return self.trainable_params / self.total_params

    @property
    def module_names(self) -> list[str]:
        return [m.name for layer in self.layers for m in layer.adapted]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["trainable_percent"] = round(100 * self.trainable_share, 6)
        out["module_names"] = self.module_names
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "AdapterPlan":
        """The plan ``to_json`` wrote (``plan/plan.json``)."""
        layers = [LayerPlan(**{**layer, "adapted": [AdaptedModule(**m) for m in layer["adapted"]]})
                  for layer in data["layers"]]
        return cls(model_type=data["model_type"], num_layers=data["num_layers"], total_params=data["total_params"],
                   trainable_params=data["trainable_params"], layers=layers,
                   frozen_3d_params=data["frozen_3d_params"], notes=data["notes"],
                   memory=[MemoryEstimate(**m) for m in data["memory"]])


def _text_config(config: Any) -> Any:
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def meta_model(config: Any) -> Any:
    """Instantiate the causal LM for this config on the meta device (no memory used)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(_text_config(config))


RECIPE_LAYER_TYPE = "sliding_attention"  # the reference recipe adapts these layers only


def recipe_default_falls_back(selection: LayerSelection, layer_types: list[str] | None) -> bool:
    """True when the recipe's default (sliding-attention layers) cannot apply: the model names none."""
    unnamed = selection.layer_types is None and selection.indices is None
    return unnamed and RECIPE_LAYER_TYPE not in (layer_types or [])


def select_layers(selection: LayerSelection, layer_types: list[str] | None, num_layers: int) -> dict[int, str]:
    """Map each layer index to '' if selected, else the reason it is not."""
    if selection.layer_types is None and selection.indices is None and RECIPE_LAYER_TYPE in (layer_types or []):
        selection = LayerSelection(layer_types=[RECIPE_LAYER_TYPE])  # the recipe's default
    if selection.layer_types is not None:
        if layer_types is None:
            raise ConfigError("adapter.layers.layer_types is set but this model's config has no "
                              "layer_types; select layers with adapter.layers.indices instead")
        unknown = set(selection.layer_types) - set(layer_types)
        if unknown:
            raise ConfigError(f"adapter.layers.layer_types: {sorted(unknown)} not in this model "
                              f"(it has {sorted(set(layer_types))})")
        return {i: "" if t in selection.layer_types else f"layer type {t} not selected"
                for i, t in enumerate(layer_types)}
    if selection.indices is not None:
        try:
            chosen = set(parse_index_ranges(selection.indices, num_layers))
        except ValueError as exc:
            raise ConfigError(f"adapter.layers.indices: {exc}") from None
        return {i: "" if i in chosen else "index not selected" for i in range(num_layers)}
    return {i: "" for i in range(num_layers)}


def check_adapter(recipe: Recipe) -> None:
    """``adapter.layers`` and ``target_modules`` against the model's config.json when it is on disk (and
    its module names, once a plan has seen this config): a typo fails in a second, without torch."""
    data, known = _modules_cache(recipe)
    text = data.get("text_config", data) if data else None
    if not isinstance(text, dict):
        return
    if known is not None and known.is_file():  # written by an earlier plan of this very config
        try:
            names = json.loads(known.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            names = None
        if isinstance(names, list):
            check_targets(recipe.adapter.target_modules, names)
    if not isinstance(text.get("num_hidden_layers"), int) or not isinstance(text.get("layer_types"), list):
        return  # transformers may derive layer_types (e.g. from sliding_window_pattern): the plan checks it
    select_layers(recipe.adapter.layers, text["layer_types"], text["num_hidden_layers"])


def check_targets(targets: list[str], names: list[str]) -> None:
    """Every target must name a module of the model; a typo is an error with the nearest name, never
    a target that silently adapts nothing."""
    import difflib

    unknown = [t for t in targets if t not in names]
    if unknown:
        hints = [f"{t} -> {m[0]}" for t in unknown if (m := difflib.get_close_matches(t, names, 1))]
        raise ConfigError(f"adapter.target_modules: {unknown} not in this model"
                          + (f" (did you mean {', '.join(hints)}?)" if hints else "")
                          + f"; its modules: {', '.join(names)}")


def _module_names(model: Any) -> list[str]:
    """Leaf names a target may use: every submodule's last name and every 3-D (expert) parameter's."""
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n}
    names |= {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.dim() == 3}
    return sorted(n for n in names if not n.isdigit())


def _modules_cache(recipe: Recipe) -> tuple[dict[str, Any] | None, Path | None]:
    """The recipe model's config.json (when on disk) and where its module names are kept, keyed by its content."""
    from nortune.models import cache_root, config_json_at_hand

    data = config_json_at_hand(recipe.model.source, recipe.model.config)
    if data is None:
        return None, None
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    return data, cache_root() / "modules" / f"{digest}.json"


def _remember_modules(path: Path, names: list[str]) -> None:
    """Keep this config's module names, so the next recipe load can check targets without torch."""
    try:
        atomic_write_text(path, json.dumps(names))
    except OSError:
        pass  # a cache only: the plan itself checks the targets every time


def build_plan(config: Any, recipe: Recipe, remember: bool = False) -> AdapterPlan:
    """The plan for this config; ``remember``: the config is the recipe's own model, so keep its module
    names for the fast target check of later recipe loads."""
    import torch

    text = _text_config(config)
    num_layers = int(text.num_hidden_layers)
    layer_types = getattr(text, "layer_types", None)
    reasons = select_layers(recipe.adapter.layers, layer_types, num_layers)  # before the (slower) meta model
    model = meta_model(config)
    targets = recipe.adapter.target_modules
    r = recipe.adapter.r
    names = _module_names(model)
    check_targets(targets, names)
    if remember and (cache := _modules_cache(recipe)[1]) is not None:
        _remember_modules(cache, names)

    layers = [LayerPlan(index=i, layer_type=layer_types[i] if layer_types else None,
                        selected=reasons[i] == "") for i in range(num_layers)]
    found: dict[int, set[str]] = {i: set() for i in range(num_layers)}
    notes: list[str] = []
    if recipe_default_falls_back(recipe.adapter.layers, layer_types):
        notes.append(f"this model's config names no {RECIPE_LAYER_TYPE} layers, so every layer is adapted (the "
                     "recipe adapts sliding-attention layers only); set adapter.layers to choose")
        log.warning("plan: %s", notes[-1])
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in targets:
            continue
        match = _LAYER_NAME.match(name)
        if not match:
            notes.append(f"{name} matches a target name but is outside the decoder layers: not adapted")
            continue
        index = int(match.group("index"))
        found[index].add(leaf)
        layer = layers[index]
        if not layer.selected:
            layer.excluded[leaf] = reasons[index]
        elif not isinstance(module, torch.nn.Linear):
            layer.excluded[leaf] = f"{type(module).__name__} is not a Linear layer; LoRA not applied"
        else:
            layer.adapted.append(AdaptedModule(name, module.in_features, module.out_features,
                                               r * (module.in_features + module.out_features)))
    expert_tensors: dict[int, set[str]] = {i: set() for i in range(num_layers)}
    for name, param in model.named_parameters():
        match = _LAYER_NAME.match(name)
        if match and param.dim() == 3:
            expert_tensors[int(match.group("index"))].add(name.rsplit(".", 1)[-1])
    for layer in layers:
        for leaf in targets:
            if leaf in expert_tensors[layer.index]:
                layer.excluded[leaf] = "3-D MoE expert tensor: LoRA cannot target it"
            elif leaf not in found[layer.index]:
                why = "this layer has no such module"
                if leaf == "v_proj" and getattr(text, "attention_k_eq_v", False) \
                        and layer.layer_type == "full_attention":
                    why += " (attention_k_eq_v: keys double as values in global layers)"
                layer.excluded[leaf] = why
    if not any(layer.adapted for layer in layers):
        raise ConfigError(f"adapter.target_modules: the plan is empty: no module named {targets} in the "
                          f"selected layers")

    total = sum(p.numel() for p in model.parameters())
    frozen_3d = sum(p.numel() for p in model.parameters() if p.dim() == 3)
    if frozen_3d:
        notes.append(f"{frozen_3d:,} parameters live in 3-D (MoE expert) tensors; LoRA cannot target "
                     f"them, so they stay frozen ({100 * frozen_3d / total:.1f} % of the model)")
    trainable = sum(m.lora_params for layer in layers for m in layer.adapted)
    adapted = {m.name for layer in layers for m in layer.adapted}
    layer_bytes = saved_bytes_per_token(model, num_layers, int(text.hidden_size), adapted)
    memory = estimate_memory(text, total, trainable, layer_bytes, recipe)
    return AdapterPlan(model_type=str(text.model_type), num_layers=num_layers, total_params=total,
                       trainable_params=trainable, layers=layers, frozen_3d_params=frozen_3d,
                       notes=notes, memory=memory)


def saved_bytes_per_token(model: Any, num_layers: int, hidden: int, adapted: set[str]) -> list[int]:
    """Per decoder layer, the bytes one token leaves saved for backward under bf16 autocast.

    bf16: every Linear output, the gated MLP's activation output, and the input of each LoRA
    module (its A matrix needs it). fp32: the input of every RMSNorm (they compute in fp32),
    where q/k/v norms see their projection's output. Checked against the tensors autograd
    really saves on tiny Gemma 3 / Gemma 4 models (tests/unit/test_plan_memory.py).
    """
    import torch

    modules = dict(model.named_modules())
    per_layer = [0] * num_layers
    for name, module in modules.items():
        match = _LAYER_NAME.match(name)
        if not match:
            continue
        index, leaf = int(match.group("index")), name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear):
            per_layer[index] += 2 * module.out_features
            per_layer[index] += 2 * module.in_features if name in adapted else 0
            per_layer[index] += 2 * module.out_features if leaf == "gate_proj" else 0
        elif "norm" in type(module).__name__.lower():
            projection = modules.get(name[: -len("_norm")] + "_proj") if leaf.endswith("_norm") else None
            if isinstance(projection, torch.nn.Linear):
                width = projection.out_features
            else:
                weight = getattr(module, "weight", None)
                width = weight.numel() if weight is not None else hidden
            per_layer[index] += 4 * width
    return per_layer


@contextmanager
def saved_for_backward(model: Any) -> Iterator[dict[int, int]]:
    """Inside the block, storage -> bytes of every non-parameter tensor autograd saves for backward.

    What ``saved_bytes_per_token`` estimates; the tests and benchmarks/gpu_memory.py measure it.
    """
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield seen


HOST_RUNTIME_BYTES = 3 * GIB  # per rank: Python, torch + CUDA libraries, tokenizer and dataset


def micro_batch(recipe: Recipe) -> tuple[int, int, bool]:
    """(sequences, tokens each, gradient checkpointing) of one training micro-batch on a GPU: train's own."""
    t = recipe.train
    return t.batch_size, t.max_seq_len, t.checkpointing_on("cuda")


def estimate_memory(text: Any, total: int, trainable: int, layer_bytes: list[int],
                    recipe: Recipe) -> list[MemoryEstimate]:
    """Per-GPU memory for bf16 weights + fp32 adapter/grads/AdamW + activations, FSDP-sharded.

    ``layer_bytes`` is, per decoder layer, what one token keeps for that layer's backward
    (``saved_bytes_per_token``); with checkpointing only each layer's bf16 input is kept, plus
    one layer recomputed at a time. Activations are not sharded across GPUs. An estimate.
    """
    cfg = recipe.plan
    b, s, checkpointing = micro_batch(recipe)
    h = int(text.hidden_size)
    if checkpointing:
        activations = len(layer_bytes) * 2 * b * s * h + b * s * max(layer_bytes)
    else:
        activations = b * s * sum(layer_bytes)
    logits = 2 * 4 * b * s * int(text.vocab_size)  # fp32 logits and their gradient
    out = []
    for n in range(1, cfg.max_gpus + 1):
        weights = 2 * total / n
        adapter = 16 * trainable / n  # fp32 params + grads + two AdamW moments
        overhead = 1.5 * GIB  # CUDA context, allocator slack, NCCL buffers
        total_bytes = weights + adapter + activations + logits + overhead
        host = n * (2 * total + HOST_RUNTIME_BYTES)
        out.append(MemoryEstimate(
            gpus=n, weights_gib=weights / GIB, adapter_and_optimizer_gib=adapter / GIB,
            activations_gib=activations / GIB, logits_gib=logits / GIB, overhead_gib=overhead / GIB,
            total_gib=total_bytes / GIB, fits=total_bytes / GIB <= cfg.gpu_memory_gib, host_ram_gib=host / GIB))
    return out


def plan_from_recipe(recipe: Recipe, model: str | None = None) -> AdapterPlan:
    from nortune.config import ModelSection
    from nortune.models import load_config
    from pydantic import ValidationError

    if model is not None:
        try:
            ModelSection(source=model)  # the recipe's own checks: missing path, folder without config.json
        except ValidationError as exc:
            raise ConfigError(f"--model: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
        path = Path(model).expanduser()
        if path.name == "config.json" or (path.is_dir() and (path / "config.json").is_file()):
            config = load_config(model, path if path.name == "config.json" else path / "config.json")
        else:
            config = load_config(model)
    else:
        config = load_config(recipe.model.source, recipe.model.config, recipe.model.revision)
    return build_plan(config, recipe, remember=model is None)


def recipe_plan(recipe: Recipe) -> AdapterPlan:
    """The recipe's plan, worked out once: read from ``plan/plan.json`` when the plan stage made it for this
    recipe (its manifest current and its file unchanged), else built here, and said."""
    from nortune.errors import IncompleteUpstream

    layout = RunLayout.of(recipe)
    path = layout.plan_dir / "plan.json"
    try:
        require_complete(layout.plan_dir, path, "the adapter plan", fingerprint(recipe))
    except IncompleteUpstream as exc:
        log.info("plan: building the adapter plan here (%s)", exc)
        return plan_from_recipe(recipe)
    return AdapterPlan.from_json(json.loads(path.read_text(encoding="utf-8")))


def format_plan(plan: AdapterPlan) -> str:
    lines = [f"model type {plan.model_type}, {plan.num_layers} decoder layers", "",
             f"{'layer':>5}  {'type':<18} {'adapted modules':<40} excluded (why)"]
    for layer in plan.layers:
        adapted = ", ".join(f"{m.name.rsplit('.', 1)[-1]} {m.in_features}->{m.out_features}"
                            for m in layer.adapted) or "-"
        excluded = "; ".join(f"{k}: {v}" for k, v in layer.excluded.items()) or "-"
        lines.append(f"{layer.index:>5}  {layer.layer_type or '-':<18} {adapted:<40} {excluded}")
    lines += ["", f"trainable parameters: {plan.trainable_params:,} of {plan.total_params:,} "
                  f"({100 * plan.trainable_share:.4f} %)"]
    lines += [f"note: {n}" for n in plan.notes]
    lines += ["", "memory per GPU (estimate; FSDP full shard; GiB; logits are an upper bound: TRL's fused "
                  "LM head computes them in tiles):",
              f"{'gpus':>4} {'weights':>9} {'adapter+opt':>12} {'activations':>12} {'logits':>8} "
              f"{'overhead':>9} {'total':>8}  fits  {'host RAM/node':>13}"]
    for m in plan.memory:
        lines.append(f"{m.gpus:>4} {m.weights_gib:>9.2f} {m.adapter_and_optimizer_gib:>12.3f} "
                     f"{m.activations_gib:>12.2f} {m.logits_gib:>8.2f} {m.overhead_gib:>9.2f} "
                     f"{m.total_gib:>8.2f}  {'yes ' if m.fits else 'NO  '}  {m.host_ram_gib:>13.1f}")
    lines.append("host RAM/node: those GPUs on one node; each rank holds the full bf16 weights while loading "
                 "(docs/train.md)")
    return "\n".join(lines)


def fingerprint(recipe: Recipe) -> dict[str, Any]:
    source = recipe.model.config or recipe.model.source
    return {"recipe": recipe.section_fingerprint("model", "adapter", "plan"), "model": str(source),
            "micro_batch": list(micro_batch(recipe))}


def work(ctx: StageContext) -> StageResult:
    """The plan stage: ``plan/plan.json`` and ``plan/plan.txt`` (``nortune plan`` prints the latter)."""
    directory = ctx.directory
    plan = plan_from_recipe(ctx.recipe)
    atomic_write_text(directory / "plan.json", json.dumps(plan.to_json(), indent=2))
    atomic_write_text(directory / "plan.txt", format_plan(plan) + "\n")
    return StageResult([directory / "plan.json", directory / "plan.txt"],
                       {"trainable_params": plan.trainable_params, "total_params": plan.total_params})


STAGE = Stage("plan", fingerprint, work)


def run(recipe: Recipe, options: Options = Options()) -> dict[str, Any]:
    """The stage through the runner (as ``nortune plan`` runs it); returns its manifest."""
    return run_stage(STAGE, recipe, options).manifest
