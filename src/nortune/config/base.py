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
# export's verification text and the forgetting guard's held-out and dev texts (their README says where they
# come from and what they are disjoint from).
PACKAGE_DATA = Path(__file__).resolve().parents[1] / "data"
HELDOUT_LANGUAGES = ("nb", "nn", "en")


def packaged_heldout(split: str = "heldout") -> dict[str, Path]:
    """The packaged texts per language: ``heldout`` (what evaluate reports) or ``dev`` (for choosing)."""
    folder = PACKAGE_DATA / "heldout" / ("dev" if split == "dev" else "")
    return {lang: folder / f"{lang}.txt" for lang in HELDOUT_LANGUAGES}


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
