"""On 4 and 8 fake CPU devices (`data` x `fsdp` x `tensor` meshes) a sharded step lays out params,
LoRA params, optimizer state and batch by the logical rules, and gives the same losses and
updated params as one device."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh

from jaxcook.engine import sharding
from jaxcook.lora import LoraConfig
from jaxcook.models.decoder import Decoder
from tests.engine.tiny import TINY

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path, devices, data, fsdp, tensor, mode):
    out = tmp_path / f"{devices}-{data}-{fsdp}-{tensor}-{mode}.npz"
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }
    args = [str(out), str(data), str(fsdp), str(tensor), mode]
    subprocess.run(
        [sys.executable, "-m", "tests.engine.sharded_step", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    got = np.load(out)
    return got, json.loads(str(got["shardings"]))


def key(*path):
    return "".join(f"['{p}']" for p in path) + ".value"


# The layout the rules promise (hand-written from the issue: column-parallel q/k/v/gate/up,
# row-parallel o/down, vocabulary-parallel embedding and head, embed over fsdp, adapters
# following their kernel, the stacked `layers` axis and LoRA rank replicated).
KERNELS = {
    ("layers", "self_attn", "q_proj"): [None, "fsdp", "tensor"],
    ("layers", "self_attn", "k_proj"): [None, "fsdp", "tensor"],
    ("layers", "self_attn", "v_proj"): [None, "fsdp", "tensor"],
    ("layers", "self_attn", "o_proj"): [None, "tensor", "fsdp"],
    ("layers", "mlp", "gate_proj"): [None, "fsdp", "tensor"],
    ("layers", "mlp", "up_proj"): [None, "fsdp", "tensor"],
    ("layers", "mlp", "down_proj"): [None, "tensor", "fsdp"],
    ("lm_head",): ["fsdp", "tensor"],
}


def expected_lora(kernel_spec):
    """A follows the kernel's input axis, B its output axis; the one not over fsdp (o/down's A,
    q/k/v/gate/up/head's B) is also split over fsdp (the ZeRO fallback of `param_spec`)."""
    *lead, k_in, k_out = kernel_spec
    zero = lambda axis: axis if axis == "fsdp" else [axis, "fsdp"]
    return {"lora_a": [*lead, zero(k_in), None], "lora_b": [*lead, None, zero(k_out)]}


def shard_shape(shape, spec, sizes):
    """Per-device shard shape of a global `shape` under `spec` on a mesh of axis `sizes`."""
    out = []
    for dim, axis in zip(shape, list(spec) + [None] * (len(shape) - len(spec))):
        names = [] if axis is None else (axis if isinstance(axis, list) else [axis])
        out.append(dim // int(np.prod([sizes[a] for a in names] or [1])))
    return out


def live(axis, sizes):
    """`axis` without mesh axes of size 1 (a 1-way split is no split), as `param_spec` writes it."""
    names = [] if axis is None else [a for a in (axis if isinstance(axis, list) else [axis])]
    names = [a for a in names if not sizes or sizes[a] > 1]
    return None if not names else names[0] if len(names) == 1 else names


def norm(spec, sizes=None):
    """Axes of size 1 dropped; trailing Nones dropped (JAX prints P('a', None) and P('a') alike)."""
    spec = [live(a, sizes) for a in spec]
    while spec and spec[-1] is None:
        spec.pop()
    return spec


def check_layout(sh, sizes, mode, params):
    n = int(np.prod(list(sizes.values())))
    kernels = dict(KERNELS)
    if mode == "tied":  # no lm_head kernel: its adapter lives in lm_head_lora, laid out like one
        del kernels[("lm_head",)]
        spec = expected_lora(KERNELS[("lm_head",)])
        for leaf in ("lora_a", "lora_b"):
            got = sh["params"][key("lm_head_lora", leaf)][0]
            assert norm(got) == norm(spec[leaf], sizes), (leaf, got)
    for group in ("params", "mu", "nu", "grad_accum") if mode != "full" else ():
        for path, kspec in kernels.items():
            for leaf, spec in expected_lora(kspec).items():
                got_spec, got_shard, n_shards = sh[group][key(*path, leaf)]
                assert norm(got_spec) == norm(spec, sizes), (group, path, leaf, got_spec)
                want = shard_shape(params[key(*path, leaf)].shape, norm(spec, sizes), sizes)
                assert got_shard == want, (group, path, leaf, got_shard)
                assert n_shards == n
    base = "params" if mode == "full" else "frozen"
    groups = [base] + (["mu", "nu", "grad_accum"] if mode == "full" else [])
    for group in groups:
        for path, spec in kernels.items():
            got_spec, _, _ = sh[group][key(*path, "kernel")]
            assert norm(got_spec) == norm(spec, sizes), (group, path, got_spec)
        assert norm(sh[group][key("embed_tokens", "embedding")][0]) == norm(["tensor", "fsdp"], sizes)
        assert norm(sh[group][key("norm", "scale")][0]) == norm(["fsdp"], sizes)
    if mode == "full":  # real shard shapes of a big one: [L, D, H*hd] / (fsdp, tensor)
        q = key("layers", "self_attn", "q_proj", "kernel")
        assert sh["params"][q][1] == [2, 32 // sizes["fsdp"], 32 // sizes["tensor"]]
    for name in (".tokens_BT", ".targets_BT", ".mask_BT", ".inputs['weights']"):
        spec, shard, _ = sh["batch"][name]
        assert spec == [["data", "fsdp"]]
        assert shard == [8 // (sizes["data"] * sizes["fsdp"]), 32]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    return {mode: run(tmp, 1, 1, 1, 1, mode)[0] for mode in ("lora", "full", "tied")}


@pytest.mark.parametrize(
    "devices,data,fsdp,tensor,mode",
    [
        (4, 2, 2, 1, "lora"),
        (4, 2, 2, 1, "full"),
        (4, 1, 2, 2, "lora"),
        (8, 2, 2, 2, "lora"),
        (8, 2, 2, 2, "full"),
        (4, 1, 2, 2, "tied"),
    ],
)
def test_sharded_step_matches_one_device(tmp_path, one_device, devices, data, fsdp, tensor, mode):
    got, sh = run(tmp_path, devices, data, fsdp, tensor, mode)
    one = one_device[mode]
    assert int(got["devices"]) == devices
    check_layout(sh, {"data": data, "fsdp": fsdp, "tensor": tensor}, mode, one)
    np.testing.assert_allclose(got["losses"], one["losses"], rtol=1e-5)
    keys = [k for k in one.files if k not in ("losses", "devices", "shardings")]
    assert keys
    for k in keys:
        np.testing.assert_allclose(got[k], one[k], atol=1e-5, err_msg=k)


def test_indivisible_dimension_is_an_error_naming_param_shape_and_axis():
    # TINY's vocabulary (97) does not split over tensor=2; its width (32) does not split over fsdp=3.
    state = nnx.state(nnx.eval_shape(lambda: Decoder(TINY, lora=LoraConfig(rank=4))))
    mesh = AbstractMesh((1, 1, 1, 2), sharding.MESH_AXES)
    with pytest.raises(sharding.ShardingError, match=r"embedding.*\(97, 32\).*vocab=97.*tensor"):
        sharding.state_shardings(state, mesh)
    mesh = AbstractMesh((1, 3, 1, 1), sharding.MESH_AXES)
    want = r"embed_tokens\.embedding: shape \(97, 32\) axis 1 \(embed=32\).*'fsdp' of size 3"
    with pytest.raises(sharding.ShardingError, match=want):
        sharding.state_shardings(state, mesh)


def test_heads_must_split_whole_over_tensor():
    with pytest.raises(sharding.ShardingError, match="num_kv_heads=2 .* 'tensor' of size 4"):
        sharding.check_model(TINY, AbstractMesh((1, 1, 1, 4), sharding.MESH_AXES))


def test_mesh_config_sizes():
    assert sharding.MeshConfig().sizes(8) == (1, 8, 1, 1)
    assert sharding.MeshConfig(data=2, tensor=2).sizes(8) == (2, 2, 1, 2)
    assert sharding.MeshConfig(data=1, fsdp=2, tensor=-1).sizes(8) == (1, 2, 1, 4)
    with pytest.raises(sharding.ShardingError, match="at most one"):
        sharding.MeshConfig(data=-1, fsdp=-1).sizes(8)
    with pytest.raises(sharding.ShardingError, match="does not match 8 devices"):
        sharding.MeshConfig(data=3, fsdp=1).sizes(8)
    with pytest.raises(sharding.ShardingError, match="groups of 3"):
        sharding.MeshConfig(tensor=3).sizes(8)
    assert sharding.make_mesh().axis_names == ("data", "fsdp", "expert", "tensor")
    assert jax.device_count() == 1
