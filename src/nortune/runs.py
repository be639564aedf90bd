"""Run folders and stage manifests.

A stage writes its outputs first and its ``manifest.json`` last, atomically, so a folder
with a manifest is complete. Starting a stage removes the old manifest first: a crash in
a rerun can never leave new half-written outputs beside an old "complete" marker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FAILED = "failed.json"  # a stage that failed writes this instead of a manifest
RESOLVED_RECIPE = "recipe.resolved.yaml"
PARTIAL = ".partial"  # what a failed attempt left behind, moved aside so no later stage reads it
# What a failed attempt keeps in place so that the next one can continue (train --resume, evaluate's
# per-request cache); everything else it wrote goes to PARTIAL. Keyed by stage kind.
RESUMABLE: dict[str, tuple[str, ...]] = {"train": ("checkpoints", "log.jsonl"),
                                          "preference": ("checkpoints", "log.jsonl"), "evaluate": ("cache",)}

# The stages in pipeline order and the folder each writes under the run folder (nanochat's
# phase -> folder dict). ``pipeline.STAGES`` binds each name to its module in this order; the
# ledger and the report read this dict (the report is itself a stage, so it cannot read the pipeline).
STAGE_FOLDERS: dict[str, str] = {
    "curate": "curate",
    "decontam": "decontam",
    "plan": "plan",
    "train": "train",
    "preference": "preference",
    "evaluate-base": "evaluate/base",
    "evaluate-tuned": "evaluate/tuned",
    "evaluate-preference": "evaluate/preference",
    "export": "export",
    "report": "report",
}
# Folders a stage writes that are not stages of their own: the preference pairs' contamination check.
EXTRA_FOLDERS: dict[str, str] = {"decontam-preference": "decontam-preference"}
# Which training stage made the model an evaluation label scores.
MODEL_STAGE_OF_LABEL: dict[str, str] = {"tuned": "train", "preference": "preference"}


@dataclass(frozen=True)
class RunLayout:
    """Every folder and every artifact that crosses a stage boundary, named once.

    Stages, the CLI, the ledger and the report ask this object for paths; none spells
    ``run_dir / "train" / "adapter_lora"`` itself. Files a stage reads only from itself stay
    with that stage.
    """

    root: Path
    CONTAMINATION_REPORT: ClassVar[str] = "contamination.json"

    @classmethod
    def of(cls, recipe: Any) -> "RunLayout":
        return cls(Path(recipe.run_dir))

    def stage_dir(self, stage: str) -> Path:
        folder = STAGE_FOLDERS.get(stage) or EXTRA_FOLDERS.get(stage)
        if folder is None:
            raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_FOLDERS)}")
        return self.root / folder

    # curate / decontam
    @property
    def curate_dir(self) -> Path:
        return self.stage_dir("curate")

    @property
    def curate_output(self) -> Path:
        return self.curate_dir / "train.jsonl"

    def decontam_dir(self, folder: str = "decontam") -> Path:
        return self.stage_dir(folder)

    def contamination_report(self, folder: str = "decontam") -> Path:
        return self.decontam_dir(folder) / self.CONTAMINATION_REPORT

    # plan
    @property
    def plan_dir(self) -> Path:
        return self.stage_dir("plan")

    # training stages: "train" (SFT) and "preference"
    def model_dir(self, stage: str) -> Path:
        if stage not in ("train", "preference"):
            raise KeyError(f"{stage!r} makes no model; train or preference")
        return self.stage_dir(stage)

    def adapter(self, stage: str) -> Path:
        """The trained adapter as PEFT saved it (PiSSA: residual-base form)."""
        return self.model_dir(stage) / "adapter"

    def adapter_init(self, stage: str) -> Path:
        """The adapter before training (PiSSA's SVD factors), for the conversion to plain LoRA."""
        return self.model_dir(stage) / "adapter_init"

    def adapter_lora(self, stage: str) -> Path:
        """The adapter as plain LoRA on the original base (rank 2r after PiSSA's conversion)."""
        return self.model_dir(stage) / "adapter_lora"

    def tokenizer(self, stage: str) -> Path:
        return self.model_dir(stage) / "tokenizer"

    def merged(self, stage: str) -> Path:
        return self.model_dir(stage) / "merged"

    def training_plan(self, stage: str = "train") -> Path:
        return self.model_dir(stage) / "plan.json"

    @property
    def preference_pairs(self) -> Path:
        """The normalised pairs the preference stage trains on (and decontam-preference checks)."""
        return self.model_dir("preference") / "pairs.jsonl"

    # evaluate
    def evaluate_dir(self, label: str) -> Path:
        return self.stage_dir(f"evaluate-{label}")

    def results(self, label: str) -> Path:
        return self.evaluate_dir(label) / "results.json"

    def compare_dir(self, label: str) -> Path:
        return self.evaluate_dir(label) / "compare"

    # export / report / the pipeline's own record
    @property
    def export_dir(self) -> Path:
        return self.stage_dir("export")

    @property
    def report_dir(self) -> Path:
        return self.stage_dir("report")

    @property
    def report_page(self) -> Path:
        return self.report_dir / "report.html"

    @property
    def pipeline_record(self) -> Path:
        return self.root / "pipeline.json"


@dataclass(frozen=True)
class Options:
    """What a command may ask of any stage beyond its recipe; its work finds them in ``StageContext.options``."""

    force: bool = False  # rerun even when the manifest matches
    resume: bool = False  # train / preference: continue from the last checkpoint
    allow_contaminated: str | None = None  # train past a failing contamination gate, with this reason


@contextmanager
def atomic_writer(path: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """Write ``path`` through a unique temporary file in its folder, then ``os.replace`` it into place.

    Readers see the old or the new file, never half of one. The temporary name is created
    exclusively (``mkstemp``: ``O_CREAT | O_EXCL``, ``O_NOFOLLOW``), so a symlink planted beside the
    target cannot redirect the write; ``os.replace`` swaps a symlink at ``path`` itself for the file
    and never writes into its target. On any error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def create_new(path: Path, binary: bool = False) -> IO[Any]:
    """Open ``path`` for writing only if nothing is there yet, never through a link (``O_EXCL | O_NOFOLLOW``).

    For files that worker processes write into a folder made fresh for the run: a file or link that
    another process planted there makes this fail (``UnsafeOutput``), so no existing file is overwritten.
    """
    from nortune.errors import UnsafeOutput

    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except FileExistsError:
        raise UnsafeOutput(f"{path} already exists{' as a link' if os.path.islink(path) else ''} in a folder "
                           "made fresh for this run: another process is writing there; nothing was "
                           "written through it (rerun once it has stopped)") from None
    return os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"}))


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A path for another program (a converter, a quantiser, ``save_pretrained``) to write ``path`` to.

    It lies in a fresh private folder (``mkdtemp``, mode 0700) beside ``path``, so nothing can be
    planted at it; what the program wrote there (a file or a folder) replaces ``path`` only when the
    block ends without an error, and the folder is removed either way.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp = private / path.name
        yield tmp
        if tmp.exists():
            if path.is_dir() and not path.is_symlink() and tmp.is_dir():
                shutil.rmtree(path)  # os.replace cannot swap a folder for a non-empty one
            os.replace(tmp, path)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically and never through a symlink (see ``atomic_writer``)."""
    with atomic_writer(path) as handle:
        handle.write(text)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path, binary=True) as handle:
        handle.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_HASHES: dict[tuple[str, int, int, int, int], str] = {}  # (path, device, inode, size, mtime ns) -> sha256


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The file's SHA-256, computed once per process while the file is unchanged (same inode, size, mtime):
    the fingerprint, the upstream check and the gate all ask for the training data's hash."""
    info = os.stat(path)
    key = (str(Path(path).resolve()), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def inputs_fingerprint(paths: list[Path]) -> dict[str, str]:
    """Content hashes of a stage's input files (folders: every file inside, sorted)."""
    out: dict[str, str] = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for item in files:
            out[str(item)] = file_sha256(item)
    return out


@dataclass
class StageRun:
    """One stage's folder; call ``complete`` last with what it produced."""

    stage: str
    directory: Path
    fingerprint: dict[str, Any]
    started: float = field(default_factory=time.time)

    def complete(self, outputs: list[Path], metrics: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
        manifest = {
            "stage": self.stage,
            "fingerprint": self.fingerprint,
            "outputs": {str(p.relative_to(self.directory)): _describe(p) for p in outputs},
            "metrics": metrics or {},
            "started": self.started,
            "finished": time.time(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "machine": _machine(),
            "packages": _package_versions(),
            "nortune_version": _version(),
            "nortune_git_commit": git_commit(),
            **(extra or {}),
        }
        atomic_write_text(self.directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        return manifest


HASH_FOLDERS_UP_TO = 2 * 1024**3  # hash folder contents up to this size; above it, sizes only


def _describe(path: Path) -> dict[str, Any]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in files)
        out: dict[str, Any] = {"kind": "folder", "files": len(files), "bytes": size}
        if size <= HASH_FOLDERS_UP_TO:
            digest = hashlib.sha256()
            for item in files:
                digest.update(f"{item.relative_to(path)}\0{file_sha256(item)}\n".encode())
            out["sha256"] = digest.hexdigest()
        return out
    return {"kind": "file", "bytes": path.stat().st_size, "sha256": file_sha256(path)}


PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "lm_eval", "llama_cpp_python",
            "gguf", "numpy")


def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def git_commit() -> str | None:
    """The commit of the nortune checkout this code runs from (None for an installed wheel)."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("+dirty" if dirty else "")


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu": platform.machine(), "cpus": os.cpu_count()}
    torch = sys.modules.get("torch")  # only when a stage already imported it
    if torch is not None and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _version() -> str:
    from nortune import __version__

    return __version__


_WARNED: set[str] = set()  # unreadable records already named in this process


def _read_record(path: Path) -> dict[str, Any] | None:
    """A manifest or failure record, or None when it is truncated, not JSON or not an object."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        record = None
    if not isinstance(record, dict):
        if str(path) in _WARNED:
            return None
        _WARNED.add(str(path))
        log.warning("%s is unreadable (truncated or not a JSON object): the stage counts as incomplete; "
                    "rerun it", path)
        return None
    return record


class ManifestRecord(BaseModel):
    """The shape ``StageRun.complete`` writes; every manifest is read back through it."""

    model_config = ConfigDict(extra="allow", strict=True)
    stage: str
    fingerprint: dict[str, Any]
    outputs: dict[str, dict[str, Any]]
    metrics: dict[str, Any] = {}
    started: float | None = None
    finished: float | None = None


class FailureRecord(BaseModel):
    """The shape ``runner.record_failure`` writes; every failure record is read back through it."""

    model_config = ConfigDict(extra="allow", strict=True)
    stage: str
    error: str
    type: str | None = None
    interrupted: bool = False
    user_error: bool = False
    started: float | None = None
    finished: float | None = None


def _shape_problem(model: type[BaseModel], record: dict[str, Any]) -> str | None:
    """The first field of ``record`` that ``model`` does not accept, and why; None when it fits."""
    try:
        model.model_validate(record)
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{'.'.join(map(str, first['loc'])) or 'the record'}: {first['msg']}"
    return None


def _require_shape(model: type[BaseModel], path: Path, record: dict[str, Any], kind: str) -> dict[str, Any]:
    """A well-formed record of the wrong shape was written by hand or by something else: refused, one line."""
    from nortune.errors import MalformedRunRecord

    problem = _shape_problem(model, record)
    if problem is not None:
        raise MalformedRunRecord(f"{path}: {problem}: not a {kind} nortune wrote (edited, or from elsewhere); "
                                 "remove it and run the stage again")
    return record


def read_failure(directory: Path) -> dict[str, Any] | None:
    """The failure record of a stage whose last attempt failed (None when it has none)."""
    path = directory / FAILED
    if not path.is_file() or read_manifest(directory) is not None:
        return None
    record = _read_record(path)
    if record is None:
        return {"stage": directory.name, "error": f"{path} is unreadable (truncated or not JSON)"}
    return _require_shape(FailureRecord, path, record, "failure record")


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The stage's manifest; None when it has none or when it is truncated or not JSON (a crash's leftover:
    the stage is incomplete and reruns). A JSON object of the wrong shape is refused: one line naming the
    file and the field (``MalformedRunRecord``), since no nortune process writes one."""
    path = directory / MANIFEST
    if not path.is_file():
        return None
    record = _read_record(path)
    return None if record is None else _require_shape(ManifestRecord, path, record, "manifest")


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The fingerprint entries that differ between a stage's last run and what the recipe asks for now."""
    return sorted(k for k in set(old) | set(new) if k not in old or k not in new or old[k] != new[k])


def require_complete(directory: Path, output: Path, what: str, fingerprint: dict[str, Any] | None = None,
                     accept: str | None = None) -> None:
    """Accept ``output`` of the stage in ``directory`` only with that stage's manifest, unchanged since,
    and, given the ``fingerprint`` the current recipe implies for that stage, only when it is current.

    A stage that failed or was interrupted has no manifest, so whatever it left is refused here,
    before any work; an output edited after its manifest was written is refused too, and so is
    one made from other inputs or settings (``accept`` says how to use it knowingly anyway).
    """
    from nortune.errors import IncompleteUpstream

    manifest = read_manifest(directory)
    stage = directory.name if manifest is None else manifest.get("stage", directory.name)
    if manifest is None:
        raise IncompleteUpstream(f"{output}: the {stage} stage that writes {what} has no manifest in {directory} "
                                 f"(its last run failed or did not finish); rerun `nortune {stage}` first")
    if fingerprint is not None and manifest["fingerprint"] != fingerprint:
        changed = ", ".join(changed_keys(manifest["fingerprint"], fingerprint))
        raise IncompleteUpstream(f"{output}: stale, the {stage} stage made it before a change to its inputs or "
                                 f"settings (changed: {changed}); rerun `nortune {stage}` (or `nortune run`)"
                                 + (f", or {accept}" if accept else ""))
    recorded = (manifest.get("outputs") or {}).get(str(output.relative_to(directory)))
    if recorded is None or not output.exists():
        raise IncompleteUpstream(f"{output}: not among the outputs of the finished {stage} stage "
                                 f"({directory / MANIFEST}); rerun `nortune {stage}`")
    if _describe(output) != recorded:
        raise IncompleteUpstream(f"{output}: changed since the {stage} stage finished (its hash differs from "
                                 f"{directory / MANIFEST}); rerun `nortune {stage}`")


def _remove_links(directory: Path) -> None:
    """Unlink every symlink in a stage's folder before it writes: the libraries that write its outputs
    (``save_pretrained``, safetensors, matplotlib) open plain paths, and a planted link would redirect
    them. Unlinking a link never touches what it points to."""
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            item = Path(root) / name
            if item.is_symlink():
                log.warning("%s is a symbolic link to %s; removed before the stage writes there",
                            item, os.readlink(item))
                item.unlink()


def refuse_linked_stage(directory: Path) -> None:
    """A stage folder that is a symbolic link is refused: nortune would write, move and delete in its target."""
    from nortune.errors import NortuneError

    if directory.is_symlink():
        raise NortuneError(f"{directory} is a symbolic link (to {os.readlink(directory)}); nortune writes a stage "
                           "only into a folder of the run itself: remove the link, then run again")


def begin_stage(stage: str, directory: Path, fingerprint: dict[str, Any], recipe_yaml: str) -> StageRun:
    """Invalidate any previous result, save the resolved recipe beside the outputs, start the stage."""
    import shutil

    refuse_linked_stage(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    (directory / FAILED).unlink(missing_ok=True)
    shutil.rmtree(directory / PARTIAL, ignore_errors=True)  # an earlier failure's leftovers
    _remove_links(directory)
    atomic_write_text(directory / RESOLVED_RECIPE, recipe_yaml)
    return StageRun(stage=stage, directory=directory, fingerprint=fingerprint)
