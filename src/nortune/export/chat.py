"""``nortune chat FILE.gguf``: a quick local conversation through llama.cpp's Python bindings.

The chat template is the one inside the GGUF (written there by the converter from the merged
tokenizer), so this exercises exactly what llama.cpp, Ollama and LM Studio users will get.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterable


def open_model(path: Path, n_ctx: int = 4096, threads: int | None = None) -> Any:
    from llama_cpp import Llama

    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, verbose=False)


def reply(llm: Any, messages: list[dict[str, str]], max_tokens: int, temperature: float,
          write: Callable[[str], Any]) -> str:
    parts = []
    for chunk in llm.create_chat_completion(messages=messages, max_tokens=max_tokens,
                                           temperature=temperature, stream=True):
        piece = chunk["choices"][0]["delta"].get("content") or ""
        parts.append(piece)
        write(piece)
    return "".join(parts)


def chat(path: Path, system: str | None = None, max_tokens: int = 512, temperature: float = 0.7,
         n_ctx: int = 4096, lines: Iterable[str] | None = None) -> int:
    """Read user turns (stdin by default), print the model's answers; empty line or EOF ends.

    The conversation runs in a child process on this terminal, so a llama.cpp crash while loading
    or generating is a ``NativeCrash`` naming the file and the signal, not the end of nortune.
    """
    from nortune.export.native import call

    return call("chat", path, "nortune.export.chat:chat_in_process", path, system, max_tokens, temperature,
                n_ctx, list(lines) if lines is not None else None, interactive=True)


def chat_in_process(path: Path, system: str | None, max_tokens: int, temperature: float, n_ctx: int,
                    lines: list[str] | None) -> int:
    llm = open_model(path, n_ctx=n_ctx)
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    source = lines if lines is not None else _stdin_lines()
    try:
        for line in source:
            text = line.strip()
            if not text or text in ("/exit", "/quit"):
                break
            messages.append({"role": "user", "content": text})
            sys.stdout.write("model> ")
            answer = reply(llm, messages, max_tokens, temperature,
                           lambda s: (sys.stdout.write(s), sys.stdout.flush()))
            sys.stdout.write("\n")
            messages.append({"role": "assistant", "content": answer})
    finally:
        llm.close()
    return 0


def _stdin_lines() -> Iterable[str]:
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stdout.write("you> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            return
        yield line
