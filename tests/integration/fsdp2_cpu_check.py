"""Run under torchrun, 2 CPU processes (gloo): PiSSA broadcast and FSDP2 gather, as the train stage uses them.

    python -m torch.distributed.run --standalone --nproc_per_node 2 fsdp2_cpu_check.py RECIPE OUT.json

accelerate sends CPU runs through DDP, so this drives torch's ``fully_shard`` directly, the way
accelerate's FSDP2 plugin shards the model on GPUs (each decoder layer, then the root).
"""

import copy
import hashlib
import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM

from nortune import ranks
from nortune.config import load_recipe
from nortune.plan import build_plan
from nortune.adapters import attach_adapter, lora_config_for_saving


def digest(model) -> str:
    h = hashlib.sha256()
    for name, tensor in ranks.pissa_tensors(model):
        h.update(name.encode() + tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def gathered(value):
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def main() -> None:
    recipe_path, out_path = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    recipe = load_recipe(recipe_path)
    model = AutoModelForCausalLM.from_pretrained(str(recipe.model.source), dtype=torch.float32)
    plan = build_plan(model.config, recipe)
    peft_model = attach_adapter(model, recipe, plan)
    torch.manual_seed(100 + rank)  # make the ranks disagree, as different SVD results would
    with torch.no_grad():
        for _, tensor in ranks.pissa_tensors(peft_model):
            tensor.add_(1e-3 * rank * torch.randn_like(tensor))
    before = gathered(digest(peft_model))
    sent = ranks.broadcast_pissa(peft_model)
    after = gathered(digest(peft_model))

    reference = copy.deepcopy(peft_model)
    initial = {k: v.detach().clone() for k, v in reference.state_dict().items() if ".lora_" in k}
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in peft_model.base_model.model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(peft_model, mesh=mesh)
    sharded = all(isinstance(p, DTensor) for p in peft_model.parameters())

    torch.manual_seed(7)
    ids = torch.randint(3, 300, (2, 24))  # the same batch on both ranks: averaged grads equal one model's
    for net in (peft_model, reference):
        optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(2):
            net(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    state = ranks.full_state_dict(peft_model)
    if rank == 0:
        expected = reference.state_dict()
        assert state.keys() == expected.keys(), sorted(set(state) ^ set(expected))[:5]
        moved = max((expected[k] - initial[k]).abs().max().item() for k in initial)
        state_diff = max((state[k] - expected[k]).abs().max().item() for k in expected)
        rebuilt = ranks.rebuild_on_cpu(reference.config, lora_config_for_saving(recipe, plan), state)
        rebuilt.eval()
        reference.eval()
        with torch.no_grad():
            logit_diff = (rebuilt(input_ids=ids).logits - reference(input_ids=ids).logits).abs().max().item()
        result = {"ranks_differed_before_broadcast": before[0] != before[1], "sent": sent,
                  "ranks_equal_after_broadcast": after[0] == after[1] == before[0], "sharded": sharded,
                  "adapter_moved": moved,
                  "max_state_difference": state_diff, "max_logit_difference": logit_diff}
        with open(out_path, "w", encoding="utf-8") as handle:
            json.dump(result, handle)
        print(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
