"""What every recipe section shares: the strict base model, the file and hub-id checks, and
loading a YAML file into a validated model (dotted overrides applied first, every problem
reported with its key path and origin)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nortune.config.yaml_io import apply_override, format_errors, read_yaml
from nortune.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    # Keys a section used to have: {key: the one-line reason and what to do instead}, shown when an
    # old recipe still sets one (an unknown key otherwise).
    removed_keys: ClassVar[dict[str, str]] = {}


def existing_file(value: Path | None) -> Path | None:
    if value is not None and not Path(value).expanduser().is_file():
        raise ValueError(f"file not found: {value}")
    return value


# Texts that ship inside the package (package data), so that no default points into a checkout's demo folder:
# export's verification text and the forgetting guard's held-out and dev texts, from independent sources
# (src/nortune/data/heldout/README.md says where each comes from and what it is disjoint from).
PACKAGE_DATA = Path(__file__).resolve().parents[1] / "data"
HELDOUT_LANGUAGES = ("nb", "nn", "en")
HELDOUT_SOURCES = ("handwritten", "debian")  # written for nortune; Debian's translation catalogues


def packaged_heldout(split: str = "heldout", sources: tuple[str, ...] | list[str] = HELDOUT_SOURCES) -> dict[str, Path]:
    """The packaged text sets, named ``SOURCE.LANGUAGE``: ``heldout`` (what evaluate reports) or ``dev`` (for
    choosing settings, and for watching training)."""
    return {f"{source}.{lang}": PACKAGE_DATA / "heldout" / source / ("dev" if split == "dev" else "") / f"{lang}.txt"
            for source in sources for lang in HELDOUT_LANGUAGES}


def language_of(text_set: str) -> str:
    """A text set is named LANGUAGE or SOURCE.LANGUAGE (``nb``, ``debian.nn``): its language."""
    return text_set.rsplit(".", 1)[-1]


class GuardTexts(Section):
    """Text sets per language, each scored text by text and judged against a reference: what the forgetting
    guard after training (``evaluate.perplexity``, the held-out split) and the watch during training
    (``train.watch``, the dev split) share."""

    split: ClassVar[str]  # which packaged split the default texts are: "heldout" or "dev"
    # text set -> a file with one text per line; named LANGUAGE or SOURCE.LANGUAGE (nb, debian.en).
    texts: dict[str, Path]
    # Which packaged sources `texts` is made of when the recipe gives no `texts` (every one by default).
    packaged: list[Literal["handwritten", "debian"]] = Field(default_factory=lambda: list(HELDOUT_SOURCES),
                                                             min_length=1)
    trained: list[str] = Field(default_factory=lambda: ["nb", "nn"])  # the languages the recipe trains toward
    tolerance: float = Field(0.02, ge=0)  # relative rise allowed for a language not in `trained`
    max_tokens_per_text: int = Field(256, ge=2)  # longer texts are cut (the first tokens are scored)
    # What one batch's logits may take (texts x tokens x vocabulary x 4 bytes, twice with cross-entropy's copy):
    # a 262k vocabulary makes 16 texts of 200 tokens 7 GB otherwise.
    memory_mib: int = Field(512, ge=16)

    @model_validator(mode="before")
    @classmethod
    def _texts_from_packaged(cls, data: Any) -> Any:
        """``texts`` not given: the packaged sets of the ``packaged`` sources (stated in the recipe, or all)."""
        if not isinstance(data, dict):
            return data
        chosen = [s for s in data.get("packaged", HELDOUT_SOURCES) if s in HELDOUT_SOURCES]
        if "texts" not in data:
            return {**data, "texts": packaged_heldout(cls.split, chosen)} if chosen else data
        given = {str(k): Path(v) for k, v in (data["texts"] or {}).items()} if isinstance(data["texts"], dict) else {}
        if "packaged" in data and given != packaged_heldout(cls.split, chosen):  # a resolved recipe has both, equal
            raise ValueError("packaged: only chooses the default texts; give texts or packaged, not both")
        return data

    @field_validator("texts")
    @classmethod
    def _texts_readable(cls, value: dict[str, Path]) -> dict[str, Path]:
        for name, path in value.items():
            if not re.fullmatch(r"[\w.-]+", name):
                raise ValueError(f"texts.{name}: a set name is letters, digits, '.', '_' or '-'")
            if not Path(path).is_file():
                raise ValueError(f"texts.{name}: file not found: {path}")
            if not any(line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()):
                raise ValueError(f"texts.{name}: {path} has no text (one text per line)")
        return value

    @model_validator(mode="after")
    def _set_names_say_their_language(self) -> "GuardTexts":
        """``nb-wiki`` or ``wiki_nb`` would be a set of no trained language: said, with the name meant."""
        for name in self.texts:
            for lang in self.trained:
                misnamed = re.fullmatch(rf"{lang}[-_](\w+)|(\w+)[-_]{lang}", name)
                if misnamed and language_of(name) != lang:
                    raise ValueError(f"texts.{name}: a set is named LANGUAGE or SOURCE.LANGUAGE, so this one has "
                                     f"no trained language (did you mean {misnamed.group(1) or misnamed.group(2)}."
                                     f"{lang}?)")
        return self


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# A recipe string that becomes a file or folder name (the run name, the exported model's name): one
# path component, no separators, no leading dot, so it can neither climb out of nor hide in a folder.
FILE_NAME = r"^[A-Za-z0-9][\w.-]*$"


def _plain_name(value: str) -> str:
    if not re.fullmatch(FILE_NAME, value):
        raise ValueError("must be a plain name that a file is named by: letters, digits, '_', '.' and '-', "
                         "starting with a letter or digit (no '/')")
    return value


PlainName = Annotated[str, AfterValidator(_plain_name)]

M = TypeVar("M", bound=BaseModel)


def load_validated(path: str | Path, overrides: list[str] | tuple[str, ...], model: type[M]) -> M:
    """Read the YAML file at ``path``, apply the overrides, validate it as ``model``; ConfigError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    tree = read_yaml(path) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for item in overrides:
        apply_override(tree, item)
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_errors(str(path), exc, overrides, model)) from None
