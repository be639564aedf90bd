"""Whether an evaluation runs its prompts through the model's chat template (``evaluate.chat_template``).

Published NorEval numbers for instruction-tuned models use lm-eval's ``apply_chat_template``
(and ``fewshot_as_multiturn``); for a base model the plain prompt is the right one. ``auto``
decides from the model's name (the last part of ``model.source``: ``-it``, ``instruct`` or
``chat`` as a word) and from the tokenizer having a template. Base and tuned models of one run
resolve from the same ``model.source``, so the pipeline's own comparison always shares the mode.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from nortune.config.names import EMBEDDED_PREFIX
from nortune.errors import ConfigError

log = logging.getLogger(__name__)

# A word of the model's name that marks an instruction-tuned checkpoint: gemma-4-31B-it,
# Llama-3.1-8B-Instruct, normistral-7b-warm-instruct, some-model-chat.
_INSTRUCT_WORD = re.compile(r"(?:^|[-_.])(?:it|instruct|chat)(?:[-_.]|$)", re.IGNORECASE)


def looks_instruct(model_source: str) -> bool:
    """Whether the model's name says it is instruction-tuned (the embedded gemma3-270m is a base model)."""
    name = model_source.removeprefix(EMBEDDED_PREFIX).rstrip("/").rsplit("/", 1)[-1]
    return bool(_INSTRUCT_WORD.search(name))


def tokenizer_template(lm: Any) -> str | None:
    """The chat template lm-eval would apply for this model (its own selection; vLLM's resolved
    ``hf_chat_template`` where it has one, as its ``apply_chat_template`` passes that), or None."""
    if getattr(lm, "hf_chat_template", None):
        return lm.hf_chat_template
    try:
        template = lm.chat_template(True)
    except (AttributeError, NotImplementedError, ValueError):
        return None
    return template or None


def resolve(settings: Any, model_source: str, lm: Any) -> dict[str, Any]:
    """The chat mode an evaluation runs with: what the recipe said, whether the template is applied and why,
    the template's sha256, and the few-shot / system-instruction settings that go with it.

    ``on`` with a tokenizer that has no template is a recipe error (before any item is scored).
    """
    setting = settings.chat_template
    template = tokenizer_template(lm)
    if setting == "on":
        if template is None:
            raise ConfigError(f"evaluate.chat_template: on, but the tokenizer of {model_source} has no chat "
                              "template; set evaluate.chat_template: off (or auto)")
        applied, reason = True, "evaluate.chat_template: on"
    elif setting == "off":
        applied, reason = False, "evaluate.chat_template: off"
    elif not looks_instruct(model_source):
        applied, reason = False, f"auto: {model_source} is a base model (no -it / instruct / chat in its name)"
    elif template is None:
        applied, reason = False, f"auto: {model_source} looks instruction-tuned but its tokenizer has no chat template"
        log.warning("evaluate: %s", reason)
    else:
        applied, reason = True, f"auto: {model_source} is instruction-tuned and its tokenizer has a chat template"
    return {
        "setting": setting, "applied": applied, "reason": reason,
        "template_sha256": hashlib.sha256(template.encode()).hexdigest() if applied and template else None,
        "fewshot_as_multiturn": bool(applied and settings.fewshot_as_multiturn),
        "system_instruction": settings.system_instruction if applied else None,
    }


def simple_evaluate_args(chat: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``lm_eval.simple_evaluate`` that carry the chat mode."""
    return {"apply_chat_template": chat["applied"], "fewshot_as_multiturn": chat["fewshot_as_multiturn"],
            "system_instruction": chat["system_instruction"]}


def label(chat: dict[str, Any] | None) -> str:
    """One phrase for reports and the ledger: 'chat template on (sha256 1a2b3c4d, few-shot as turns)'."""
    if not chat:
        return "chat template: not recorded"
    if not chat["applied"]:
        return "chat template off"
    extras = [f"sha256 {chat['template_sha256'][:12]}" if chat.get("template_sha256") else None,
              "few-shot as turns" if chat.get("fewshot_as_multiturn") else "few-shot in one turn",
              "system instruction" if chat.get("system_instruction") else None]
    return "chat template on (" + ", ".join(e for e in extras if e) + ")"
