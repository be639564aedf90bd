"""llama.cpp work runs in a child process, and the llama.cpp build is portable and keyed by build.

The child runner is tested with real crashes (a null-pointer read through ctypes, and the fault
hook the export tests use), not with mocks; the toolchain tests check what decides which wheel
a machine may use.
"""

from __future__ import annotations

import json
import signal

import pytest

from nortune.export import native, toolchain


def test_a_real_segfault_in_the_child_is_an_error_naming_file_and_signal(tmp_path):
    target = tmp_path / "model.gguf"
    with pytest.raises(native.NativeCrash) as caught:
        native.call("verify", target, "ctypes:string_at", 0)  # reads address 0: a real SIGSEGV
    crash = caught.value
    assert crash.signum == signal.SIGSEGV and crash.signal_name == "SIGSEGV"
    message = str(crash)
    assert "SIGSEGV" in message and str(target) in message and "verify" in message
    assert "python -m nortune.export.toolchain" in message  # what to try
    # faulthandler's dump of the child is kept beside the file the job worked on
    assert crash.log_file == tmp_path / "model.gguf.verify-crash.log"
    assert "Fatal Python error" in crash.log_file.read_text()


def test_the_fault_hook_crashes_only_the_named_job(tmp_path, monkeypatch):
    monkeypatch.setenv(native.FAULT_ENV, "quantize")
    assert native.call("verify", tmp_path / "f", "math:sqrt", 16.0) == 4.0
    with pytest.raises(native.NativeCrash, match="SIGSEGV while running quantize"):
        native.call("quantize", tmp_path / "f", "math:sqrt", 16.0)


def test_chat_survives_a_crash_while_loading_the_model(tmp_path, monkeypatch):
    from nortune.export.chat import chat

    monkeypatch.setenv(native.FAULT_ENV, "chat")
    with pytest.raises(native.NativeCrash, match="SIGSEGV while running chat on .*x.gguf"):
        chat(tmp_path / "x.gguf", lines=["Hei"])


def test_results_and_python_errors_come_back_from_the_child(tmp_path):
    assert native.call("job", tmp_path / "f", "os.path:join", "a", "b") == "a/b"
    with pytest.raises(json.JSONDecodeError):  # the child's own exception type, re-raised here
        native.call("job", tmp_path / "f", "json:loads", "{broken")


AVX2_CPU = ["avx", "avx2", "bmi2", "f16c", "fma", "sse4_2"]
SAPPHIRE_RAPIDS = AVX2_CPU + ["amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512f", "avx512_fp16"]


def _on(monkeypatch, flags, machine="x86_64"):
    monkeypatch.setattr(toolchain, "_cpu_flags", lambda: sorted(flags))
    monkeypatch.setattr(toolchain.platform, "machine", lambda: machine)
    monkeypatch.delenv(toolchain.BUILD_ENV, raising=False)


def test_the_portable_build_is_the_same_on_every_cpu_and_never_native(monkeypatch):
    _on(monkeypatch, AVX2_CPU)
    haswell = toolchain.build_for_this_machine()
    _on(monkeypatch, SAPPHIRE_RAPIDS)
    sapphire = toolchain.build_for_this_machine()
    assert haswell == sapphire and haswell.flavour == "portable"
    assert "-DGGML_NATIVE=OFF" in haswell.cmake_args and "-march=native" not in haswell.cmake_args
    for off in ("AMX_INT8", "AMX_TILE", "AVX512"):
        assert f"-DGGML_{off}=OFF" in haswell.cmake_args
    _on(monkeypatch, [], machine="aarch64")
    arm = toolchain.build_for_this_machine()
    assert "armv8-a" in arm.cmake_args and arm.key != haswell.key


def test_a_native_build_is_keyed_by_the_cpu(monkeypatch):
    _on(monkeypatch, AVX2_CPU)
    monkeypatch.setenv(toolchain.BUILD_ENV, "native")
    one = toolchain.build_for_this_machine()
    _on(monkeypatch, SAPPHIRE_RAPIDS)
    monkeypatch.setenv(toolchain.BUILD_ENV, "native")
    other = toolchain.build_for_this_machine()
    assert one.flavour == "native" and one.key != other.key


def test_a_cpu_below_avx2_is_told_before_any_build(monkeypatch):
    _on(monkeypatch, ["sse4_2", "avx"])
    with pytest.raises(toolchain.ToolchainError, match="lacks avx2, fma, f16c, bmi2"):
        toolchain.build_for_this_machine()
    monkeypatch.setenv(toolchain.BUILD_ENV, "fastest")
    with pytest.raises(toolchain.ToolchainError, match="'portable' .* or 'native'"):
        toolchain.build_for_this_machine()


def test_a_cached_wheel_of_another_build_is_never_used(tmp_path, monkeypatch):
    _on(monkeypatch, SAPPHIRE_RAPIDS)
    build = toolchain.build_for_this_machine()
    wheels = tmp_path / build.key
    wheels.mkdir()
    (wheels / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl").write_bytes(b"wheel")
    assert toolchain._cached_wheel(wheels, build) is None  # no marker: an old native-era cache
    monkeypatch.setenv(toolchain.BUILD_ENV, "native")
    native_build = toolchain.build_for_this_machine()
    (wheels / toolchain.MARKER).write_text(json.dumps(native_build.to_json()))
    assert toolchain._cached_wheel(wheels, build) is None  # a native wheel copied into the folder
    (wheels / toolchain.MARKER).write_text(json.dumps(build.to_json()))
    assert toolchain._cached_wheel(wheels, build).name.startswith("llama_cpp_python-")


def test_check_only_refuses_an_install_of_another_build(tmp_path, monkeypatch):
    monkeypatch.setenv("NORTUNE_CACHE", str(tmp_path))
    tools = toolchain.cache_dir() / "tools"
    tools.mkdir(parents=True)
    (tools / "convert_hf_to_gguf.py").write_text("")
    monkeypatch.setattr(toolchain, "installed_version", lambda: toolchain.LLAMA_CPP_PYTHON_VERSION)
    monkeypatch.setattr(toolchain, "installed_build", lambda: {"key": "linux-x86_64-native-0123456789"})
    with pytest.raises(toolchain.ToolchainError, match="not installed .*native-0123456789"):
        toolchain.ensure(install=False)


def test_chat_without_the_right_llama_cpp_build_is_one_line(tmp_path):
    """Another build than this machine's (here: a native one asked for) names what to run; no traceback."""
    import os
    import subprocess
    import sys

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))  # a valid empty header: version 3, no tensors
    env = {**os.environ, toolchain.BUILD_ENV: "native"}
    done = subprocess.run([sys.executable, "-m", "nortune.cli", "chat", str(gguf)], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("nortune: llama-cpp-python") and "python -m nortune.export.toolchain" in done.stderr
