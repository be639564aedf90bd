"""plan's activation estimate vs the tensors autograd really saves (bf16 autocast, tiny models).

Saved tensors do not depend on the device for the same dtype and attention kernel, so this
checks the activation term of the GPU memory estimate on CPU.
"""

import pytest
import torch

from conftest import write_recipe
from nortune.config import load_recipe
from nortune.plan import plan_from_recipe, saved_for_backward
from nortune.adapters import attach_adapter

BATCH, SEQ = 2, 48


@pytest.mark.parametrize("kind", ["tiny_gemma3", "tiny_gemma4"])
def test_activation_estimate_matches_saved_tensors(kind, request, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = request.getfixturevalue(kind)
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", folder, tmp_path / "runs",
                                      train={"batch_size": BATCH, "max_seq_len": SEQ, "gradient_checkpointing": False}))
    plan = plan_from_recipe(recipe)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    peft_model = attach_adapter(model, recipe, plan)
    peft_model.train()
    ids = torch.randint(5, model.config.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    with saved_for_backward(peft_model) as saved, torch.autocast("cpu", dtype=torch.bfloat16):
        peft_model(input_ids=ids, use_cache=False).logits.float().sum().backward()
    measured = sum(saved.values())
    estimated = plan.memory[0].activations_gib * 1024 ** 3
    assert 0.8 < estimated / measured < 1.25, (estimated, measured)
