"""Ollama ``Modelfile``: the chat template, translated from the tokenizer's Jinja template, and stops.

Ollama wants a Go template, the checkpoint has a Jinja one. Rather than keep a table of
hand-written templates per model family, nortune renders the checkpoint's own template with
marker messages and reads off the text around each turn (user prefix/suffix, model
prefix/suffix, and where a system message goes), then writes the Go template from those pieces.
A template whose turns are not plain wrappers around the content is refused, not guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nortune.config.base import FILE_NAME
from nortune.config.export import modelfile_block, modelfile_parameter
from nortune.errors import TemplateError

U1, A1, U2, S = "\x01USER-ONE\x01", "\x01ASSISTANT-ONE\x01", "\x01USER-TWO\x01", "\x01SYSTEM\x01"




@dataclass(frozen=True)
class Turns:
    start: str  # text before the first turn, BOS excluded (llama.cpp adds BOS itself)
    user_prefix: str
    user_suffix: str
    model_prefix: str  # also the generation prompt
    model_suffix: str
    system_joiner: str | None  # system folded into the first user turn as system + joiner + user

    def stops(self) -> list[str]:
        stop = self.model_suffix.strip()
        return [stop] if stop else []


def _between(text: str, left: str, right: str) -> str:
    i, j = text.index(left) + len(left), text.index(right)
    if j < i:
        raise TemplateError("turns render out of order")
    return text[i:j]


def derive_turns(tokenizer: Any) -> Turns:
    def render(messages: list[dict[str, str]], generation: bool) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    try:
        full = render([{"role": "user", "content": U1}, {"role": "assistant", "content": A1},
                       {"role": "user", "content": U2}], True)
        single = render([{"role": "user", "content": U2}], False)
        single_gen = render([{"role": "user", "content": U2}], True)
    except Exception as exc:  # noqa: BLE001 - jinja raises many kinds
        raise TemplateError(f"rendering the chat template failed: {exc}") from exc
    if not single_gen.startswith(single):
        raise TemplateError("the generation prompt is not appended to the conversation")
    model_prefix = single_gen[len(single):]
    head = single[:single.index(U2)]
    bos = tokenizer.bos_token or ""
    start_and_prefix = head[len(bos):] if bos and head.startswith(bos) else head
    user_suffix = single[single.index(U2) + len(U2):]
    between_user_model = _between(full, U1, A1)
    if between_user_model != user_suffix + model_prefix:
        raise TemplateError("the text between a user turn and a model turn is not suffix + prefix")
    between_model_user = _between(full, A1, U2)
    # The user prefix is what precedes U2 after the model turn closes; it ends the rendered head too.
    user_prefix = _common_suffix(between_model_user, start_and_prefix)
    model_suffix = between_model_user[:len(between_model_user) - len(user_prefix)]
    start = start_and_prefix[:len(start_and_prefix) - len(user_prefix)]
    joiner = None
    try:
        with_system = render([{"role": "system", "content": S}, {"role": "user", "content": U2}], True)
        if S in with_system and with_system.index(S) > with_system.find(user_prefix) >= 0:
            joiner = _between(with_system, S, U2)
    except Exception:  # noqa: BLE001 - templates that reject system messages
        joiner = None
    return Turns(start, user_prefix, user_suffix, model_prefix, model_suffix, joiner)


def _common_suffix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return a[len(a) - n:] if n else ""


def _go(text: str) -> str:
    return text.replace("{{", "{{ \"{{\" }}")


def go_template(turns: Turns) -> str:
    """Go template over ``.Messages``; system messages fold into the next user turn when the Jinja
    template does that (Gemma), else they are dropped with a visible absence from the template."""
    if turns.system_joiner is not None:
        keep = '{{ if eq .Role "system" }}{{ $sys = .Content }}'
        fold = f"{{{{ if $sys }}}}{{{{ $sys }}}}{_go(turns.system_joiner)}{{{{ $sys = \"\" }}}}{{{{ end }}}}"
        first = "{{ else if eq .Role \"user\" }}"
    else:
        keep, fold, first = "", "", "{{ if eq .Role \"user\" }}"
    return (
        f"{_go(turns.start)}"
        "{{ $sys := \"\" }}"
        "{{ range $i, $_ := .Messages }}"
        "{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        f"{keep}{first}"
        f"{_go(turns.user_prefix)}{fold}{{{{ .Content }}}}{_go(turns.user_suffix)}"
        f"{{{{ if $last }}}}{_go(turns.model_prefix)}{{{{ end }}}}"
        "{{ else if eq .Role \"assistant\" }}"
        f"{_go(turns.model_prefix)}{{{{ .Content }}}}{{{{ if not $last }}}}{_go(turns.model_suffix)}{{{{ end }}}}"
        "{{ end }}"
        "{{ end }}"
    )


def modelfile(gguf_name: str, tokenizer: Any, parameters: dict[str, Any], system: str | None) -> str:
    """The Modelfile: every value is written by ``modelfile_parameter`` / ``modelfile_block`` or refused
    (the tokenizer's own strings reach it too, not only the recipe's, which were checked at load)."""
    turns = derive_turns(tokenizer)
    stops = turns.stops()
    eos = tokenizer.eos_token
    if eos and eos not in stops:
        stops.append(eos)
    if not re.fullmatch(FILE_NAME, gguf_name):
        raise TemplateError(f"{gguf_name!r} is not a plain file name")
    try:
        lines = ["# Ollama Modelfile written by nortune. Use: ollama create NAME -f Modelfile",
                 f"FROM ./{gguf_name}", "", modelfile_block("TEMPLATE", go_template(turns)), ""]
        lines += [modelfile_parameter("stop", stop) for stop in stops]
        lines += [modelfile_parameter(key, value) for key, value in parameters.items()]
        if system:
            lines += ["", modelfile_block("SYSTEM", system)]
    except ValueError as exc:
        raise TemplateError(f"the Modelfile: {exc}") from None
    return "\n".join(lines) + "\n"
