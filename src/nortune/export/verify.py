"""Verify each GGUF file in llama.cpp against the merged HF model on held-out Norwegian text.

Both models see the very same token ids (the HF tokenizer's, BOS first, in windows), so the
scores measure the weights and the runtime. Separately, llama.cpp's own tokenizer (the one in the
GGUF, which llama.cpp and Ollama users get) tokenises every held-out paragraph; the share that
comes out identical to transformers (``tokenizer_match``) must reach ``min_tokenizer_match``, so a
file with a wrong vocabulary fails even when its weights are right. Per file: top-1 next-token
agreement, perplexity of both and their ratio, the tokenizer match and the file size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nortune import markup
from nortune.config import ExportThreshold


@dataclass
class Reference:
    """The HF model's scores on the held-out windows."""

    windows: list[list[int]]
    argmax: list[Any]  # per window: predicted ids for positions 0..n-2
    nll: float  # summed negative log-likelihood of the targets
    count: int  # scored targets
    paragraphs: list[tuple[str, list[int]]]  # (text, HF ids) for the tokenizer check

    @property
    def ppl(self) -> float:
        return math.exp(self.nll / self.count)


@dataclass
class FileCheck:
    file: str
    gguf_type: str
    bytes: int
    top1: float
    ppl_hf: float
    ppl_gguf: float
    ppl_ratio: float
    tokens: int
    tokenizer_match: float
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def windows_of(ids: list[int], bos: int | None, window: int, max_tokens: int) -> list[list[int]]:
    """Cut a token stream into windows of at most `window` ids, each starting with BOS."""
    body = window - (bos is not None)
    out: list[list[int]] = []
    used = 0
    for start in range(0, len(ids), body):
        chunk = ids[start:start + body][:max_tokens - used]
        if len(chunk) < 2:
            break
        out.append(([bos] if bos is not None else []) + chunk)
        used += len(chunk)
        if used >= max_tokens:
            break
    return out


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def reference(model_dir: Path, text: str, window: int, max_tokens: int, dtype: str = "float32") -> Reference:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nortune.adapters import resolve_device

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    device = resolve_device("auto")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype)).to(device)
    model.eval()
    paragraphs = [(p, tokenizer(p, add_special_tokens=False).input_ids) for p in _paragraphs(text)]
    ids = [i for _, para in paragraphs for i in para]
    windows = windows_of(ids, tokenizer.bos_token_id, window, max_tokens)
    if not windows:
        raise ValueError("the held-out text gives no tokens to score")
    argmax, nll, count = [], 0.0, 0
    with torch.no_grad():
        for win in windows:
            logits = model(input_ids=torch.tensor([win], device=device)).logits[0, :-1].double().cpu()
            targets = torch.tensor(win[1:])
            logp = torch.log_softmax(logits, dim=-1)
            nll -= logp.gather(1, targets[:, None]).sum().item()
            count += len(targets)
            argmax.append(logits.argmax(-1).numpy())
    return Reference(windows, argmax, nll, count, paragraphs)


def check_file(path: Path, gguf_type: str, ref: Reference, threshold: ExportThreshold,
               threads: int | None = None, min_tokenizer_match: float = 1.0) -> FileCheck:
    """Load the file in llama.cpp, score the reference windows, compare."""
    import numpy as np
    from llama_cpp import Llama

    size = max(len(w) for w in ref.windows)
    llm = Llama(model_path=str(path), n_ctx=max(size, 32), n_batch=size, n_ubatch=size,
                logits_all=True, verbose=False, n_threads=threads, n_threads_batch=threads)
    try:
        agree, nll, count = 0, 0.0, 0
        for win, hf_argmax in zip(ref.windows, ref.argmax):
            llm.reset()
            llm.eval(win)
            scores = np.asarray(llm.scores[:len(win) - 1], dtype=np.float64)
            top = scores.max(axis=1, keepdims=True)
            logz = top[:, 0] + np.log(np.exp(scores - top).sum(axis=1))
            targets = np.asarray(win[1:])
            nll -= float((scores[np.arange(len(targets)), targets] - logz).sum())
            agree += int((scores.argmax(axis=1) == hf_argmax).sum())
            count += len(targets)
        same = sum(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) == ids
                   for text, ids in ref.paragraphs)
    finally:
        llm.close()
    ppl = math.exp(nll / count)
    top1 = agree / count
    ratio = ppl / ref.ppl
    tokenizer_match = same / max(len(ref.paragraphs), 1)
    reasons = []
    if tokenizer_match < min_tokenizer_match:
        reasons.append(f"llama.cpp's tokenizer matches transformers on {tokenizer_match:.0%} of the held-out "
                       f"paragraphs (< {min_tokenizer_match:.0%})")
    if threshold.min_top1 is not None and top1 < threshold.min_top1:
        reasons.append(f"top-1 agreement {top1:.4f} < {threshold.min_top1}")
    if threshold.ppl_tolerance is not None and abs(ratio - 1) > threshold.ppl_tolerance:
        reasons.append(f"perplexity ratio {ratio:.4f} is off by more than {threshold.ppl_tolerance:.2%}")
    return FileCheck(file=path.name, gguf_type=gguf_type, bytes=path.stat().st_size, top1=top1,
                     ppl_hf=ref.ppl, ppl_gguf=ppl, ppl_ratio=ratio, tokens=count,
                     tokenizer_match=tokenizer_match, passed=not reasons,
                     reasons=reasons)


def markdown_table(checks: list[dict[str, Any]]) -> str:
    lines = ["| file | type | size | top-1 agreement | ppl HF | ppl GGUF | ratio | tokenizer match | result |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for c in checks:
        result = "passed" if c["passed"] else "FAILED: " + "; ".join(markup.text(r) for r in c["reasons"])
        lines.append(f"| {markup.text(c['file'])} | {c['gguf_type']} | {human_bytes(c['bytes'])} "
                     f"| {100 * c['top1']:.2f} % | {c['ppl_hf']:.3f} | {c['ppl_gguf']:.3f} | {c['ppl_ratio']:.4f} "
                     f"| {100 * c['tokenizer_match']:.0f} % | {result} |")
    return "\n".join(lines)


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
