"""Reading a recipe's YAML and its dotted overrides, and phrasing validation errors.

Kept apart from the typed sections: this is about where a value came from (the file, with its
line, or the command line) and how a mistake is named, not what is valid. A section names the
keys it no longer has in ``removed_keys`` ({key: what to do instead}); an old recipe that still
sets one gets that sentence instead of "unknown key".
"""

from __future__ import annotations

import codecs
import difflib
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from nortune.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last silently)."""


def _no_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first on line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + str(getattr(exc, "problem", None) or exc)


MAX_DEPTH = 32  # nesting levels a recipe may use; the deepest shipped one uses 4


def _too_deep_line(text: str) -> int | None:
    """The line where the text's nesting first passes MAX_DEPTH, from the parser's events (no recursion)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_UniqueKeyLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    return event.start_mark.line + 1
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None  # the load reports the syntax error with its line
    return None


def _tree_too_deep(tree: Any) -> bool:
    """Whether the loaded tree nests deeper than MAX_DEPTH (aliases can build depth, or a cycle, that
    the text does not show). Level by level over distinct containers, so shared aliases stay cheap."""
    level = [tree]
    for _ in range(MAX_DEPTH + 1):
        children = {}
        for node in level:
            for child in (node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()):
                if isinstance(child, (dict, list)):
                    children[id(child)] = child
        if not children:
            return False
        level = list(children.values())
    return True


def _load(text: str, where: str, lines: bool = True) -> Any:
    """yaml.load with nesting bounded: a too deep text or tree is a ConfigError, never a RecursionError."""
    line = _too_deep_line(text)
    if line is not None:
        raise ConfigError(f"{where}{f':{line}' if lines else ''}: nested deeper than {MAX_DEPTH} levels")
    try:
        tree = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to read") from None
    if _tree_too_deep(tree):
        raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels (through aliases)")
    return tree


def read_yaml(path: Path) -> Any:
    """The recipe file's tree; encoding, syntax and duplicate keys are ConfigErrors naming the line."""
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError(f"{path}: the file is UTF-16; save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x}); save the recipe as UTF-8") \
            from None
    try:
        return _load(text, str(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_problem(exc)}") from None


def override_key(dotted: str) -> str:
    return dotted.split("=", 1)[0].strip()


def apply_override(tree: dict[str, Any], dotted: str) -> None:
    """Apply one ``a.b.c=value`` override; the value is read as YAML (so lists and numbers work)."""
    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r}: expected key.path=value")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {dotted!r}: empty key segment")
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {'.'.join(parts[:depth + 1])} is not a section")
        node = child
    try:
        node[parts[-1]] = _load(raw, f"override {key.strip()}=...", lines=False) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {dotted!r}: the value is not valid YAML ({_problem(exc)})") from None


def _section_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section class that holds the key at ``loc`` (list items and dict values looked through)."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = model.model_fields[part].annotation
        while not (isinstance(model, type) and issubclass(model, BaseModel)):
            inner = [a for a in get_args(model) if a is not type(None)]
            if not inner:
                return None
            model = inner[-1]
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


# Names other tools use (transformers' TrainingArguments, PEFT, Axolotl, TRL) for a key nortune has: said
# beside "unknown key" when the section has the nortune name.
ALIASES = {
    "learning_rate": "lr", "mix": "shares", "language_shares": "shares", "lora_r": "r", "rank": "r",
    "lora_alpha": "alpha", "lora_dropout": "dropout", "lora_target_modules": "target_modules",
    "num_train_epochs": "epochs", "num_epochs": "epochs", "per_device_train_batch_size": "batch_size",
    "micro_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum",
    "max_seq_length": "max_seq_len", "max_length": "max_seq_len", "sequence_len": "max_seq_len",
    "neftune_alpha": "neftune_noise_alpha", "neftune": "neftune_noise_alpha", "lr_scheduler_type": "scheduler",
    "lr_scheduler": "scheduler", "dataset": "data", "datasets": "data", "model_name_or_path": "source",
    "base_model": "source", "init_lora_weights": "init", "bf16": "precision", "fp16": "precision",
}


def suggestion(key: str, fields: list[str]) -> str | None:
    """The known key a mistyped or borrowed one most likely means: a known alias, else the closest name."""
    if ALIASES.get(key) in fields:
        return ALIASES[key]
    close = difflib.get_close_matches(key, fields, 1)
    return close[0] if close else None


def format_errors(where: str, err: ValidationError, overrides: list[str] | tuple[str, ...],
                  root: type[BaseModel]) -> str:
    """One line per problem: its source (file or override), key path, reason and a did-you-mean."""
    lines = []
    keys = {override_key(o): o for o in overrides}
    for item in err.errors():
        loc = tuple(item["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        origin = next((f"override {keys[k]!r}" for k in keys
                       if key == k or key.startswith(k + ".") or k.startswith(key + ".")), where)
        reason = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            reason = "unknown key"
            section = _section_at(root, loc)
            removed = getattr(section, "removed_keys", {}).get(str(loc[-1]))
            close = suggestion(str(loc[-1]), list(section.model_fields)) if section else None
            if removed:
                reason = removed
            elif close:
                reason += f" (did you mean {close}?)"
        elif item["type"] == "missing":
            reason = "required key is missing"
        shown = item.get("input")
        got = "" if item["type"] in ("missing", "extra_forbidden") or isinstance(shown, dict) else f" (got {shown!r})"
        lines.append(f"{origin}: {key}: {reason}{got}" if loc else f"{origin}: {reason}")
    return "\n".join(lines)
