"""llama.cpp's own tooling, set up once and cached: the Python bindings and the HF -> GGUF converter.

nortune never quantises by hand. It uses what llama.cpp ships:

* ``convert_hf_to_gguf.py`` (with its ``conversion/`` package and the matching ``gguf-py``) for
  HF -> GGUF F32/F16/BF16/Q8_0, and
* ``llama_model_quantize`` from llama-cpp-python (the C++ quantiser) for K-quants such as Q4_K_M,
  plus ``Llama`` to load and run every file it writes.

llama-cpp-python has no binary wheel for this platform, so the first set-up builds one from the
source distribution (multimodal parts, tests, tools and the server off) and keeps it in
``$NORTUNE_CACHE/llama_cpp/<version>/wheels/<cpu key>/``; the converter is copied from the same
source distribution into ``$NORTUNE_CACHE/llama_cpp/<version>/tools/``. Every later set-up, in any
virtual environment on the same machine, installs the cached wheel in seconds.

Run ``python -m nortune.export.toolchain`` (``make setup`` does) to set up or check.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# The version whose vendored llama.cpp converts and runs Gemma 4 (global layers without v_proj).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
# Lean build: the bindings need only libllama + ggml; multimodal, tests, tools and server are off.
LEAN_CMAKE_ARGS = ("-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF "
                   "-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF")
# What the converter needs from the source distribution (paths under vendor/llama.cpp).
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "LICENSE",
                   "models/ggml-vocab-gemma-4.gguf")


class ToolchainError(RuntimeError):
    """llama.cpp's tooling is missing and could not be set up."""


def cache_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    from nortune.models import cache_root

    return cache_root() / "llama_cpp" / version


def cpu_key() -> str:
    """The wheel is built for this CPU (ggml's native flags): key the cache by machine and CPU flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
                break
    except OSError:
        flags = platform.processor()
    digest = hashlib.sha256(flags.encode()).hexdigest()[:10]
    return f"{platform.system().lower()}-{platform.machine()}-{digest}"


@dataclass(frozen=True)
class Toolchain:
    converter: Path  # convert_hf_to_gguf.py inside the cached tools folder
    version: str

    @property
    def tools(self) -> Path:
        return self.converter.parent

    @property
    def gemma4_vocab(self) -> Path:
        return self.tools / "models" / "ggml-vocab-gemma-4.gguf"


def installed_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        return None


def _pip(python: str, *args: str, env: dict[str, str] | None = None) -> None:
    command = [python, "-m", "pip", *args]
    log.info("running: %s", " ".join(command))
    result = subprocess.run(command, env=env)
    if result.returncode:
        raise ToolchainError(f"`{' '.join(command)}` failed with exit code {result.returncode}")


def _sdist(root: Path, version: str, python: str) -> Path:
    """The source distribution, via pip (its HTTP cache makes a second fetch free)."""
    folder = root / "sdist"
    found = sorted(folder.glob(f"llama_cpp_python-{version}.tar.gz"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    _pip(python, "download", "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={version}",
         "-d", str(folder))
    found = sorted(folder.glob(f"llama_cpp_python-{version}.tar.gz"))
    if not found:
        raise ToolchainError(f"pip did not leave llama_cpp_python-{version}.tar.gz in {folder}")
    return found[0]


def _extract_converter(sdist: Path, tools: Path, version: str) -> None:
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    tmp = Path(tempfile.mkdtemp(prefix=".tools-", dir=tools.parent))
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers()
                   if m.name.startswith(prefix) and m.isfile()
                   and any(m.name[len(prefix):] == p or m.name[len(prefix):].startswith(p + "/")
                           for p in CONVERTER_PARTS)]
        for member in members:
            member.name = member.name[len(prefix):]
            archive.extract(member, tmp, filter="data")
    if not (tmp / "convert_hf_to_gguf.py").is_file():
        raise ToolchainError(f"{sdist} has no vendor/llama.cpp/convert_hf_to_gguf.py")
    shutil.rmtree(tools, ignore_errors=True)
    os.replace(tmp, tools)


def _build_wheel(sdist: Path, wheels: Path, python: str) -> Path:
    wheels.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["CMAKE_ARGS"] = (LEAN_CMAKE_ARGS + " " + env.get("CMAKE_ARGS", "")).strip()
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    print(f"nortune: building llama-cpp-python {sdist.name} once (about 7-10 min on 2 cores); "
          f"the wheel is cached in {wheels}", flush=True)
    started = time.time()
    _pip(python, "wheel", "--no-deps", "-w", str(wheels), str(sdist), env=env)
    print(f"nortune: llama-cpp-python built in {time.time() - started:.0f} s", flush=True)
    return _cached_wheel(wheels)  # type: ignore[return-value]


def _cached_wheel(wheels: Path) -> Path | None:
    found = sorted(wheels.glob("llama_cpp_python-*.whl"))
    return found[-1] if found else None


def ensure(python: str | None = None, version: str = LLAMA_CPP_PYTHON_VERSION,
           install: bool = True) -> Toolchain:
    """Set up (or just find) the converter and the bindings; cheap when already done."""
    python = python or sys.executable
    root = cache_dir(version)
    tools = root / "tools"
    if not (tools / "convert_hf_to_gguf.py").is_file():
        if not install:
            raise ToolchainError(f"llama.cpp's converter is not set up in {tools}; run "
                                 "`python -m nortune.export.toolchain` (or `make setup`)")
        root.mkdir(parents=True, exist_ok=True)
        _extract_converter(_sdist(root, version, python), tools, version)
    current = installed_version() if python == sys.executable else None
    if current != version:
        if not install:
            raise ToolchainError(f"llama-cpp-python {version} is not installed (found {current}); run "
                                 "`python -m nortune.export.toolchain` (or `make setup`)")
        wheels = root / "wheels" / cpu_key()
        wheel = _cached_wheel(wheels) or _build_wheel(_sdist(root, version, python), wheels, python)
        _pip(python, "install", "-q", str(wheel))
    return Toolchain(converter=tools / "convert_hf_to_gguf.py", version=version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nortune.export.toolchain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report; install nothing")
    parser.add_argument("--python", default=sys.executable, help="interpreter to install into")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        chain = ensure(python=args.python, install=not args.check)
    except ToolchainError as exc:
        print(f"nortune: {exc}", file=sys.stderr)
        return 1
    print(f"llama.cpp tooling ready: llama-cpp-python {chain.version}, converter {chain.converter}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
