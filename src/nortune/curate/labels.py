"""Record-level language labels (with mixed-language detection) and translation tagging."""

from __future__ import annotations

import re
from dataclasses import dataclass

from nortune.curate.langid import LangId, tokens

MIN_TURN_WORDS = 4  # turns shorter than this are too short to call mixed on
# Bokmål vs Nynorsk is only reliable from six words on (where langid's accuracy is measured),
# and a neutral sentence valid in both standards still gets a fairly confident label. A turn
# below either bar counts as "no" (either standard), so it never makes a record mixed alone.
MIN_NB_NN_WORDS = 6
MIN_NB_NN_CONFIDENCE = 0.97
NORWEGIAN = {"nb", "nn", "no"}
_TRANSLATE_ASK = re.compile(
    r"(?i)\b(overs[eæ]tt\w*|omsett\w*|omset\b|translat\w*|übersetz\w*|traduc\w*|"
    r"(skriv|gjer|gjør|gjere|gjøre|endre|endra|konverter\w*)( \w+){0,4} om (til|på) (nynorsk|bokmål|engelsk|norsk)|"
    r"(på|til|into|to|in) (nynorsk|bokmål|engelsk|norsk|english|norwegian|nynorn?sk)\s*[:.?!]|"
    r"(from|fra|frå) (nynorsk|bokmål|engelsk|norsk|english|norwegian) (til|to|into))")
_PARALLEL_KEYS = ({"source", "target"}, {"src", "tgt"}, {"translation"}, {"nb", "nn"},
                  {"en", "nb"}, {"en", "nn"}, {"no", "en"})


@dataclass(frozen=True)
class LangLabel:
    lang: str  # nb / nn / en / other: of the assistant turns (what the model learns to write)
    confidence: float
    mixed: bool
    turn_langs: tuple[str, ...]  # per confidently-labelled turn, in order


def label_record(model: LangId, messages: list[dict[str, str]]) -> LangLabel:
    answer = "\n".join(m["content"] for m in messages if m["role"] == "assistant")
    whole = answer if tokens(answer) else "\n".join(m["content"] for m in messages)
    lang, conf = model.predict(whole)
    seen = {whole: (lang, conf)}  # a single assistant turn is not scored twice
    turn_langs: list[str] = []
    for message in messages:
        words = len(tokens(message["content"]))
        if message["role"] == "system" or words < MIN_TURN_WORDS:
            continue
        turn_lang, turn_conf = seen.get(message["content"]) or model.predict(message["content"])
        if turn_conf >= 0.8:
            undecided = words < MIN_NB_NN_WORDS or turn_conf < MIN_NB_NN_CONFIDENCE
            turn_langs.append("no" if turn_lang in NORWEGIAN and undecided else turn_lang)
    mixed = _mixed(set(turn_langs))
    return LangLabel(lang=lang, confidence=conf, mixed=mixed, turn_langs=tuple(turn_langs))


def _mixed(langs: set[str]) -> bool:
    """Two standards of Norwegian, or Norwegian beside another language, or two other languages."""
    if {"nb", "nn"} <= langs:
        return True
    families = {"no" if lang in NORWEGIAN else lang for lang in langs}
    return len(families) > 1


def _trigrams(text: str) -> set[str]:
    text = " ".join(tokens(text))
    return {text[i:i + 3] for i in range(len(text) - 2)}


def is_translation(raw: dict, messages: list[dict[str, str]], label: LangLabel) -> str | None:
    """Why the record is a translation task (a short reason), or None."""
    keys = {str(k).lower() for k in raw}
    for group in _PARALLEL_KEYS:
        if group <= keys and "messages" not in keys:
            return "parallel fields " + "+".join(sorted(group))
    users = [m["content"] for m in messages if m["role"] == "user"]
    if any(_TRANSLATE_ASK.search(u[:600]) for u in users):
        return "translation request"
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    if label.mixed and users and answers:
        # Near-verbatim bilingual content: the answer restates the prompt in another language.
        src, dst = users[-1], answers[-1]
        ratio = len(dst) / max(len(src), 1)
        if 0.5 <= ratio <= 2.0:
            a, b = _trigrams(src), _trigrams(dst)
            if a and b and len(a & b) / len(a | b) >= 0.3:
                return "bilingual near-verbatim pair"
    return None
