"""What every recipe section shares: the strict base model, the file and hub-id checks, and
loading a YAML file into a validated model (dotted overrides applied first, every problem
reported with its key path and origin)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

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
