"""tinker-cookbook 0.6.1, unchanged, against the server: its supervised loop on its shipped
chat JSONL (loss falls; an interrupted run resumes from its checkpoint's weights and
optimizer state) and its RL loop
on its synthetic arithmetic environment with `importance_sampling`.

The tokenizer reaches the cookbook through its own local-folder path: the model name is the
model folder (or the server's tokenizer folder), which `get_tokenizer` loads offline.
"""

import pytest

from tests.serve.cookbook_runs import checkpoints, cut_after, run_rl, run_sft, sft_data

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def cookbook_env(server, monkeypatch):
    # Code paths that build a ServiceClient without base_url read these.
    monkeypatch.setenv("TINKER_BASE_URL", server.url)
    monkeypatch.setenv("TINKER_API_KEY", "tml-dummy")


def test_sft_loss_falls_and_an_interrupted_run_resumes_from_its_checkpoint(server, tmp_path):
    import tinker
    from tinker_cookbook.supervised.common import compute_mean_nll

    name = server.cfg.base.model  # the model folder: weights and tokenizer
    full = run_sft(server.url, name, tmp_path / "full")
    nll = [m["train_mean_nll"] for m in full if "train_mean_nll" in m]
    assert len(nll) == 8  # 128 conversations / batch 16, one epoch
    assert sum(nll[-2:]) / 2 < nll[0] - 0.5, nll

    # A run killed after its step-4 checkpoint: its log dir holds checkpoints up to 000004.
    state_path = cut_after(tmp_path / "full", "000004", tmp_path / "cut")["state_path"]
    resumed = run_sft(server.url, name, tmp_path / "cut")  # resumes at batch 4 via create-via-load
    nll_cut = {m["step"]: m["train_mean_nll"] for m in resumed if "train_mean_nll" in m}
    assert sorted(nll_cut) == [4, 5, 6, 7]
    ckpts = checkpoints(tmp_path / "cut")
    assert ckpts[-1]["name"] == "final" and ckpts[-1]["state_path"].startswith("tinker://")

    # What the resumed run saw is the checkpoint's state: replay batches 4 and 5 by hand from it
    # (weights and Adam moments), with the cookbook's own batches and NLL.
    dataset, _ = sft_data(name)()
    dataset.set_epoch(seed=0)
    b4, b5 = dataset.get_batch(4), dataset.get_batch(5)
    mean_nll = lambda out, batch: compute_mean_nll(
        [o["logprobs"] for o in out.loss_fn_outputs], [d.loss_fn_inputs["weights"] for d in batch]
    )
    with tinker.ServiceClient(base_url=server.url, api_key="tml-dummy") as sc:
        tc = sc.create_training_client_from_state_with_optimizer(state_path).result()
        out4 = tc.forward_backward(b4, "cross_entropy").result()
        tc.optim_step(tinker.AdamParams(learning_rate=3e-3, beta1=0.9, beta2=0.95, eps=1e-8)).result()
        out5 = tc.forward(b5, "cross_entropy").result()
    assert nll_cut[4] == pytest.approx(mean_nll(out4, b4), abs=1e-5)
    assert nll_cut[5] == pytest.approx(mean_nll(out5, b5), abs=1e-5)


def test_rl_arithmetic_importance_sampling(server, tmp_path):
    rows = run_rl(server.url, server.cfg.base.model, tmp_path / "rl", steps=4)
    steps = [m for m in rows if "env/all/reward/total" in m]
    assert len(steps) == 4
    for m in steps:
        # The server's sampler and trainer agree on the sampled tokens' log-probs (on-policy).
        assert abs(m["optim/kl_sample_train_v1"]) < 1e-4
        assert m["env/all/ac_tokens_per_turn"] > 0
    ckpts = checkpoints(tmp_path / "rl")
    assert [c["name"] for c in ckpts][-1] == "final"
    # The final sampler checkpoint samples through a fresh SDK client.
    import tinker
    from tinker import types

    with tinker.ServiceClient(base_url=server.url, api_key="tml-dummy") as sc:
        sampler = sc.create_sampling_client(model_path=ckpts[-1]["sampler_path"]).result()
        out = sampler.sample(
            types.ModelInput.from_ints([1, 2, 3]), 2, types.SamplingParams(max_tokens=3)
        ).result()
        assert len(out.sequences) == 2
