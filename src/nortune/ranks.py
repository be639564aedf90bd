"""What changes when `nortune train` runs as several processes (``accelerate launch`` / torchrun).

Nothing here distributes work: accelerate and torch.distributed do. This module only answers
the questions the train stage must ask in a multi-process run: which rank writes the run folder
(rank 0 alone), how every rank starts from the same PiSSA initialisation (rank 0's tensors are
broadcast), and how the trained model is brought back whole (torch's full state dict, which
gathers FSDP2 shards and unwraps DDP) so rank 0 can save it with the single-process code.
"""

from __future__ import annotations

import os
from typing import Any


def world_size() -> int:
    """Processes in this run, from torchrun's environment (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0 writes the run folder, the checkpoints' fingerprint and the manifest; others only train."""
    return rank() == 0


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def peak_gpu_memory(device: str) -> list[dict[str, float]] | None:
    """Every rank's peak allocated and reserved GPU memory (GiB), rank 0 first; None off the GPU.

    A collective under a launcher, so every rank calls it; the manifest keeps it beside the plan's estimate.
    """
    import torch
    import torch.distributed as dist

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    mine = {"allocated_gib": round(torch.cuda.max_memory_allocated() / 1024**3, 3),
            "reserved_gib": round(torch.cuda.max_memory_reserved() / 1024**3, 3)}
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return everyone


def pissa_tensors(peft_model: Any) -> list[tuple[str, Any]]:
    """The tensors PiSSA initialisation writes: each adapted module's residual base weight and its A, B."""
    found = []
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
            found.append((f"{name}.base_layer.weight", module.base_layer.weight))
            found += [(f"{name}.lora_A.{k}.weight", m.weight) for k, m in module.lora_A.items()]
            found += [(f"{name}.lora_B.{k}.weight", m.weight) for k, m in module.lora_B.items()]
    return found


def broadcast_pissa(peft_model: Any) -> int:
    """Overwrite every rank's PiSSA tensors with rank 0's; returns how many tensors were sent.

    An SVD (the randomised one above all, and any SVD on different GPUs or library builds) need
    not give the same bits on every rank, and FSDP2 shards each rank's own copy without
    synchronising it. Broadcasting the adapted modules only costs their size, not the model's.
    """
    import torch
    import torch.distributed as dist

    if world_size() == 1:
        return 0
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("launched as several processes but the process group is not initialised")
    tensors = pissa_tensors(peft_model)
    with torch.no_grad():
        for _, tensor in tensors:
            if dist.get_backend() == "gloo" or tensor.device.type != "cpu":
                dist.broadcast(tensor.data, src=0)
            else:  # NCCL sends device tensors only
                moved = tensor.data.to(f"cuda:{torch.cuda.current_device()}")
                dist.broadcast(moved, src=0)
                tensor.data.copy_(moved.cpu())
    return len(tensors)


def full_state_dict(model: Any) -> dict[str, Any]:
    """The whole model's state dict on CPU, gathered from every rank; a collective, so call it on all.

    ``torch.distributed.checkpoint.state_dict`` gathers FSDP2's DTensor shards and strips the
    DDP wrapper's ``module.`` prefix, so the keys are those of the unwrapped PEFT model.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def rebuild_on_cpu(config: Any, lora_config: Any, state: dict[str, Any]) -> Any:
    """A CPU PEFT model holding ``state`` (no copy: the tensors are assigned), for rank 0 to save and merge.

    Parameters start on the meta device so a 31B model costs one copy of its weights in host RAM (the
    gathered state dict itself), not two. ``lora_config`` must not re-run PiSSA: the residual
    base weights are already in ``state``.
    """
    from accelerate import init_empty_weights
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    with init_empty_weights():  # parameters on meta, buffers (rotary frequencies) real
        base = AutoModelForCausalLM.from_config(config, dtype=next(iter(state.values())).dtype)
    model = get_peft_model(base, lora_config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if unexpected or any(not _tied(model, k) for k in missing):
        raise RuntimeError(f"gathered state dict does not fit the model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    model.base_model.model.tie_weights()
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:
            raise RuntimeError(f"{name} stayed on the meta device")
    return model


def _tied(model: Any, key: str) -> bool:
    return key.endswith("lm_head.weight") and getattr(model.config, "tie_word_embeddings", False)
