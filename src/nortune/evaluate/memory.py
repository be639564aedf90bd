"""The evaluation backend's memory budget: what a batch costs, and what the machine can give.

The prefix-sharing backend's large tensors are the KV cache (once per context, then once per
answer row after repeating), the transient activations of a forward, and the logits with their
log-softmax. With Gemma's 262,144-token vocabulary the logits dominate: one continuation
position costs 1 MiB in fp32, so 400 rows x 19 positions are 8 GB per tensor. The estimates
below are upper bounds (every large tensor of a forward counted at once), so a planner that
keeps them under the budget keeps the real peak under it too; a test measures that.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024 ** 3
FP32 = 4


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else psutil's figure."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.virtual_memory().available)


# Positions per forward on a CPU: the fastest setting of the sweep in docs/evaluate.md (256, 512,
# 1024, 2048, 4096 on the recipe's shape; smaller chunks keep the [rows, vocab] logits and their
# log-softmax near the cache, larger ones only add memory). On a GPU larger chunks should pay
# (the LM head is cheap there); 4096 is a guess bounded by the memory budget, not a measurement.
CPU_BATCH_TOKENS = 256
GPU_BATCH_TOKENS = 4096


def default_batch_tokens(device: str) -> int:
    return GPU_BATCH_TOKENS if str(device).startswith("cuda") else CPU_BATCH_TOKENS


def default_memory_gib(device: str) -> float:
    """Half of what the machine has free once the model is loaded (GPU: 80 % of free device memory).

    Half, on CPU, because lm-eval, the tokenised requests and other processes share the RAM.
    """
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return 0.8 * free / GIB
    return 0.5 * available_bytes() / GIB


def _largest(cfg, name: str) -> int | None:
    """A config value, or its largest per-layer value where it varies by layer (Gemma 4)."""
    try:
        return getattr(cfg, name, None)
    except Exception:  # transformers refuses a global read of a per-layer attribute
        values = [getattr(layer, name, None) for layer in cfg.per_layer_config]
        return max((v for v in values if v), default=None)


@dataclass(frozen=True)
class Shape:
    """The sizes of a decoder that decide what a forward costs."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    head_dim: int
    kv_heads: int
    vocab: int
    windows: tuple[int | None, ...]  # per layer: sliding window, or None for full attention
    itemsize: int                    # bytes per element of weights, activations and cache

    @classmethod
    def of(cls, model) -> "Shape":
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        heads = _largest(cfg, "num_attention_heads")
        head_dim = max(_largest(cfg, "head_dim") or cfg.hidden_size // heads, _largest(cfg, "global_head_dim") or 0)
        kv_heads = max(_largest(cfg, "num_key_value_heads") or heads, _largest(cfg, "num_global_key_value_heads") or 0)
        types = getattr(cfg, "layer_types", None) or ["full_attention"] * cfg.num_hidden_layers
        window = getattr(cfg, "sliding_window", None)
        windows = tuple(window if t in ("sliding_attention", "chunked_attention") and window else None for t in types)
        return cls(layers=cfg.num_hidden_layers, hidden=cfg.hidden_size,
                   intermediate=_largest(cfg, "intermediate_size") or 4 * cfg.hidden_size, heads=heads,
                   head_dim=head_dim, kv_heads=kv_heads, vocab=cfg.vocab_size, windows=windows,
                   itemsize=next(model.parameters()).element_size())

    def cache_bytes(self, tokens: int) -> int:
        """Keys and values of one sequence of ``tokens`` (sliding layers keep their window)."""
        kept = sum(min(tokens, w) if w else tokens for w in self.windows)
        return 2 * self.kv_heads * self.head_dim * kept * self.itemsize

    def forward_bytes(self, rows: int, queries: int, keys: int) -> int:
        """Transient activations of one forward: residual stream, q/k/v, MLP, attention scores
        and mask in fp32 (eager and the CPU math kernel materialise them), plus one layer's
        concatenated keys and values."""
        per_query = (4 * self.hidden + 3 * self.intermediate + 2 * self.heads * self.head_dim) * self.itemsize \
            + 3 * self.heads * keys * FP32 + keys * FP32
        one_layer = 2 * self.kv_heads * self.head_dim * keys * self.itemsize
        return rows * (queries * per_query + one_layer)

    def logits_bytes(self, positions: int) -> int:
        """Logits, one same-size intermediate (soft-capping, dtype cast) and the fp32 log-softmax."""
        return positions * self.vocab * (2 * max(self.itemsize, FP32) + FP32)

    def context_bytes(self, groups: int, width: int) -> int:
        """The context forward of ``groups`` left-padded contexts of ``width`` tokens, whose cache
        stays alive while their answers are scored."""
        return groups * self.cache_bytes(width) + self.forward_bytes(groups, width, width) \
            + self.logits_bytes(groups)

    def row_bytes(self, width: int, tail: int) -> int:
        """One answer row of the continuation forward: its repeated cache, its activations and
        the logits of its ``tail`` positions."""
        return self.cache_bytes(width + tail) + self.forward_bytes(1, tail, width + tail) \
            + self.logits_bytes(tail)


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak resident memory (and peak CUDA allocation) of the code inside ``with``.

    On Linux the process's high-water mark is reset first (``/proc/self/clear_refs``), so the
    figure belongs to this block and not to an earlier stage of the same process; elsewhere it is
    the process's lifetime peak (``ru_maxrss``), and ``scope`` says so.
    """

    def __enter__(self) -> "PeakMemory":
        self.scope = "block"
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            self.scope = "process"
        self.start_rss_gib = (_status_kib("VmRSS") or 0) / 1024 ** 2
        self.cuda = False
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
                self.cuda = True
        except ImportError:
            pass
        return self

    def __exit__(self, *exc) -> None:
        peak = _status_kib("VmHWM") if self.scope == "block" else None
        if peak is None:
            import resource

            self.scope = "process"
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        self.peak_rss_gib = peak / 1024 ** 2
        self.peak_cuda_gib = None
        if self.cuda:
            import torch

            self.peak_cuda_gib = torch.cuda.max_memory_allocated() / GIB

    def as_dict(self) -> dict:
        return {"peak_rss_gib": round(self.peak_rss_gib, 3), "peak_rss_scope": self.scope,
                "peak_cuda_allocated_gib": None if self.peak_cuda_gib is None else round(self.peak_cuda_gib, 3)}
