"""plan's activation estimate vs the tensors autograd really saves (bf16 autocast, tiny models).

Saved tensors do not depend on the device for the same dtype and attention kernel, so this
checks the activation term of the GPU memory estimate on CPU.
"""

import pytest
import torch

from conftest import write_recipe
from nortune.config import load_recipe
from nortune.plan import plan_from_recipe
from nortune.train import attach_adapter

BATCH, SEQ = 2, 48


def saved_for_backward(model, ids) -> int:
    """Bytes of unique non-parameter storages autograd saves in one forward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids, use_cache=False).logits.float().sum().backward()
    return sum(seen.values())


@pytest.mark.parametrize("kind", ["tiny_gemma3", "tiny_gemma4"])
def test_activation_estimate_matches_saved_tensors(kind, request, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = request.getfixturevalue(kind)
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", folder, tmp_path / "runs",
                                      plan={"batch_size": BATCH, "seq_len": SEQ, "gradient_checkpointing": False}))
    plan = plan_from_recipe(recipe)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    peft_model = attach_adapter(model, recipe, plan)
    peft_model.train()
    ids = torch.randint(5, model.config.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    measured = saved_for_backward(peft_model, ids)
    estimated = plan.memory[0].activations_gib * 1024 ** 3
    assert 0.8 < estimated / measured < 1.25, (estimated, measured)
