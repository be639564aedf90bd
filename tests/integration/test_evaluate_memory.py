"""The backend keeps a batch that needs far more than its memory budget under that budget,
measured as the resident memory a fresh process gains, with results equal to lm-eval `hf`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, tiny_config, tiny_tokenizer

pytestmark = pytest.mark.slow

# A wide vocabulary makes the logits the large tensor, as Gemma's 262,144 tokens do.
VOCAB = 131_072
BUDGET_GIB = 0.25

PROBE = r"""
import json, sys
import torch
from lm_eval.models.huggingface import HFLM
from nortune.evaluate.backend import PrefixSharingLM
from nortune.evaluate.memory import GIB, PeakMemory

folder, budget = sys.argv[1], float(sys.argv[2])
torch.set_num_threads(1)
lm = PrefixSharingLM(pretrained=folder, dtype="float32", device="cpu", batch_size=1,
                     batch_tokens=100_000, memory_gib=budget)
gen = torch.Generator().manual_seed(0)
contexts = [torch.randint(10, 400, (n,), generator=gen).tolist() for n in (40, 25)]
requests = []
for c, context in enumerate(contexts):
    for i in range(32):  # 64 answer rows of 30 tokens: [64, 29, vocab] fp32 logits are 0.9 GiB
        cont = torch.randint(0, lm.shape.vocab, (30 - (i % 3),), generator=gen).tolist()
        requests.append(((f"c{c}", f"a{i}"), context, cont))
lm._loglikelihood_tokens(requests[:2], disable_tqdm=True)  # warm-up: kernels, thread pools
with PeakMemory() as peak:
    ours = lm._loglikelihood_tokens(requests, disable_tqdm=True)
theirs = HFLM._loglikelihood_tokens(lm, requests, disable_tqdm=True)  # lm-eval's own path
need = lm.shape.context_bytes(2, 40) + 64 * lm.shape.row_bytes(40, 29)
print(json.dumps({"grown_gib": peak.peak_rss_gib - peak.start_rss_gib, "scope": peak.scope,
                  "unchunked_need_gib": need / GIB, "ours": ours, "theirs": theirs}))
"""


def test_a_batch_beyond_the_budget_stays_under_it_with_unchanged_results(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config("gemma3", VOCAB)).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path), str(BUDGET_GIB)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["scope"] == "block"
    assert found["unchunked_need_gib"] > 4 * BUDGET_GIB  # the batch really needs more than the budget
    assert 0 < found["grown_gib"] <= BUDGET_GIB, found["grown_gib"]
    assert len(found["ours"]) == len(found["theirs"]) == 64
    for (ll, greedy), (ref_ll, ref_greedy) in zip(found["ours"], found["theirs"]):
        assert ll == pytest.approx(ref_ll, abs=1e-4)
        assert greedy == ref_greedy
