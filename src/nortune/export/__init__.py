"""Export: merged checkpoint, GGUF files made and verified with llama.cpp, Modelfile, model card.

Modules: ``toolchain`` (llama.cpp set-up, cached), ``formats`` (type names), ``merge`` (PiSSA-aware
merge), ``gguf_files`` (converter + quantiser), ``verify`` (llama.cpp vs transformers),
``modelfile`` (Ollama), ``card`` (README.md), ``chat`` (``nortune chat``), ``stage`` (``run``).
Nothing heavy is imported here.
"""


def run(recipe, force=False):  # noqa: ANN001, ANN201 - thin lazy wrapper
    from nortune.export.stage import run as _run

    return _run(recipe, force=force)
