"""A Gemma-style chat template for checkpoints that ship without one.

Base (pre-trained) GGUF files such as the embedded Gemma 3 270M carry no chat template,
but their vocabulary has Gemma's turn markers. Without a template, chat SFT cannot run, so
nortune installs this one (and records that it did) instead of guessing per record.
"""

from __future__ import annotations

from typing import Any

from nortune.errors import ConfigError

# System text is folded into the first user turn, as Gemma has no system role.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- set ns.system = message['content'] + '\n\n' -%}"
    "{%- else -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{%- if role == 'user' -%}{{ ns.system }}{%- set ns.system = '' -%}{%- endif -%}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def ensure_chat_template(tokenizer: Any, model_type: str) -> str | None:
    """Install the Gemma template where a Gemma tokenizer has none; return what was installed."""
    if getattr(tokenizer, "chat_template", None):
        return None
    if not model_type.startswith("gemma"):
        raise ConfigError(f"model.source: the tokenizer has no chat template and nortune has none for model type "
                          f"{model_type!r}; use a checkpoint with a chat template")
    if tokenizer.convert_tokens_to_ids("<start_of_turn>") == tokenizer.unk_token_id:
        raise ConfigError("model.source: the tokenizer has no chat template and no <start_of_turn> token")
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    return "gemma"
