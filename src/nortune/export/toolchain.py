"""llama.cpp's own tooling, set up once and cached: the Python bindings and the HF -> GGUF converter.

nortune never quantises by hand. It uses what llama.cpp ships:

* ``convert_hf_to_gguf.py`` (with its ``conversion/`` package and the matching ``gguf-py``) for
  HF -> GGUF F32/F16/BF16/Q8_0, and
* ``llama_model_quantize`` from llama-cpp-python (the C++ quantiser) for K-quants such as Q4_K_M,
  plus ``Llama`` to load and run every file it writes.

llama-cpp-python has no binary wheel for this platform, so the first set-up builds one from the
source distribution (multimodal parts, tests, tools and the server off). The default build is
*portable*: ggml's native CPU detection is off and the kernels are compiled for a fixed baseline
(x86-64: AVX2 + FMA + F16C + BMI2, the Haswell level; aarch64: plain ARMv8-A), so one wheel runs
on every CPU from that level up, whatever CPU built it. In particular the AVX-512 and AMX
weight-repacking kernels that a ``-march=native`` build picks up on a Sapphire Rapids Xeon (and
that crashed there) are not in it. ``NORTUNE_LLAMA_CPP_BUILD=native`` opts into a ``-march=native``
build, keyed by this CPU's flags. The wheel is kept in
``$NORTUNE_CACHE/llama_cpp/<version>/wheels/<build key>/``; the converter is copied from the same
source distribution into ``$NORTUNE_CACHE/llama_cpp/<version>/tools/``. The installed package carries
a marker naming its build key, so a virtual environment (or a cache) that holds another build is
reinstalled instead of used. See docs/export.md.

Run ``python -m nortune.export.toolchain`` (``make setup`` does) to set up or check.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from nortune import children
from nortune.errors import ToolchainError

log = logging.getLogger(__name__)

# The version whose vendored llama.cpp converts and runs Gemma 4 (global layers without v_proj).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
# Lean build: the bindings need only libllama + ggml; multimodal, tests, tools and server are off.
LEAN_CMAKE_ARGS = ("-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF "
                   "-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF")
# Portable CPU kernels per machine type: a fixed instruction-set baseline, never -march=native.
PORTABLE_CPU_ARGS = {
    "x86_64": ("-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
               "-DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF "
               "-DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF "
               "-DGGML_AMX_BF16=OFF"),
    "aarch64": "-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8-a",
}
# What a portable x86-64 build needs from the CPU that runs it (/proc/cpuinfo names).
PORTABLE_X86_FLAGS = ("avx", "avx2", "fma", "f16c", "bmi2")
BUILD_ENV = "NORTUNE_LLAMA_CPP_BUILD"  # "portable" (default) or "native"
MARKER = "nortune-build.json"  # written into the installed llama_cpp package
# What the converter needs from the source distribution (paths under vendor/llama.cpp).
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "LICENSE",
                   "models/ggml-vocab-gemma-4.gguf")




def cache_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    from nortune.models import cache_root

    return cache_root() / "llama_cpp" / version


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return sorted(line.split(":", 1)[1].split())
    except OSError:
        pass
    return [platform.processor()]


def _machine() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


@dataclass(frozen=True)
class Build:
    """Which llama.cpp build this machine uses: its flavour, CMake arguments and cache key."""

    flavour: str
    cmake_args: str
    key: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def build_for_this_machine(flavour: str | None = None) -> Build:
    """The portable build for this machine type (or the native one, keyed by this CPU's flags).

    Fails before any work on a CPU below the portable baseline, naming what it lacks.
    """
    flavour = flavour or os.environ.get(BUILD_ENV, "portable")
    machine = _machine()
    system = platform.system().lower()
    if flavour == "native":
        digest = hashlib.sha256(" ".join(_cpu_flags()).encode()).hexdigest()[:10]
        return Build("native", LEAN_CMAKE_ARGS + " -DGGML_NATIVE=ON", f"{system}-{machine}-native-{digest}")
    if flavour != "portable":
        raise ToolchainError(f"{BUILD_ENV}={flavour!r}: use 'portable' (default) or 'native'")
    if machine not in PORTABLE_CPU_ARGS:
        raise ToolchainError(f"no portable llama.cpp build is defined for {machine}; set {BUILD_ENV}=native")
    if machine == "x86_64":
        missing = [f for f in PORTABLE_X86_FLAGS if f not in _cpu_flags()]
        if missing:
            raise ToolchainError(f"this CPU lacks {', '.join(missing)}, which nortune's portable llama.cpp "
                                 f"build needs (x86-64 from AVX2 up); set {BUILD_ENV}=native to build for it")
    args = f"{LEAN_CMAKE_ARGS} {PORTABLE_CPU_ARGS[machine]}"
    digest = hashlib.sha256(args.encode()).hexdigest()[:8]
    return Build("portable", args, f"{system}-{machine}-portable-{digest}")


@dataclass(frozen=True)
class Toolchain:
    converter: Path  # convert_hf_to_gguf.py inside the cached tools folder
    version: str
    build: Build

    @property
    def tools(self) -> Path:
        return self.converter.parent

    @property
    def gemma4_vocab(self) -> Path:
        return self.tools / "models" / "ggml-vocab-gemma-4.gguf"


def installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        return None


def _marker_path() -> Path | None:
    """Where the installed llama_cpp package keeps nortune's build marker (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / MARKER


def installed_build() -> dict[str, str] | None:
    """The build marker of the llama_cpp package in this interpreter, if nortune installed it."""
    path = _marker_path()
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pip(python: str, *args: str, env: dict[str, str] | None = None) -> None:
    command = [python, "-m", "pip", *args]
    log.info("running: %s", " ".join(command))
    result = children.run(command, env=env)
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


def _build_wheel(sdist: Path, wheels: Path, python: str, build: Build) -> Path:
    wheels.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["CMAKE_ARGS"] = build.cmake_args  # exactly these: a stray -march=native must not leak in
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    log.info("building llama-cpp-python %s (%s) once (about 7-10 min on 2 cores); the wheel is cached in %s",
             sdist.name, build.flavour, wheels)
    started = time.time()
    _pip(python, "wheel", "--no-deps", "-w", str(wheels), str(sdist), env=env)
    log.info("llama-cpp-python built in %.0f s", time.time() - started)
    (wheels / MARKER).write_text(json.dumps({**build.to_json(), "build_seconds": round(time.time() - started)}))
    return _cached_wheel(wheels, build)  # type: ignore[return-value]


def _cached_wheel(wheels: Path, build: Build) -> Path | None:
    """The cached wheel, only if its folder's marker says it is exactly this build."""
    try:
        marker = json.loads((wheels / MARKER).read_text())
    except (OSError, ValueError):
        return None
    found = sorted(wheels.glob("llama_cpp_python-*.whl"))
    return found[-1] if found and marker.get("key") == build.key else None


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
    build = build_for_this_machine()
    if python == sys.executable:
        marker = installed_build() or {}
        current = installed_version()
        if current == version and marker.get("key") == build.key:
            return Toolchain(converter=tools / "convert_hf_to_gguf.py", version=version, build=build)
        if not install:
            found = f"{current} ({marker.get('key', 'not built by nortune')})" if current else "nothing"
            raise ToolchainError(f"llama-cpp-python {version} ({build.key}) is not installed (found {found}); "
                                 "run `python -m nortune.export.toolchain` (or `make setup`)")
    wheels = root / "wheels" / build.key
    wheel = _cached_wheel(wheels, build) or _build_wheel(_sdist(root, version, python), wheels, python, build)
    _pip(python, "install", "-q", "--force-reinstall", "--no-deps", str(wheel))  # replace another build
    _pip(python, "install", "-q", str(wheel))  # then only its missing dependencies (diskcache, jinja2, ...)
    _write_marker(python, build, version)
    return Toolchain(converter=tools / "convert_hf_to_gguf.py", version=version, build=build)


def _write_marker(python: str, build: Build, version: str) -> None:
    """Record in the installed package which build it is, so ensure() can tell it apart later."""
    code = ("import importlib.util, json, pathlib, sys; "
            "spec = importlib.util.find_spec('llama_cpp'); "
            "path = pathlib.Path(list(spec.submodule_search_locations)[0]) / sys.argv[1]; "
            "path.write_text(sys.argv[2])")
    payload = json.dumps({**build.to_json(), "version": version})
    result = children.run([python, "-c", code, MARKER, payload], capture_output=True, text=True)
    if result.returncode:
        raise ToolchainError(f"could not mark the llama_cpp install in {python}: {result.stderr[-500:]}")


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
        log.error("nortune: %s", exc)
        return 1
    log.info("llama.cpp tooling ready: llama-cpp-python %s (%s), converter %s", chain.version, chain.build.key,
             chain.converter)
    return 0


if __name__ == "__main__":
    sys.exit(main())
