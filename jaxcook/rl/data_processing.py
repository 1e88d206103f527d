"""From trajectory groups to training datums: group-centred advantages and datum assembly.

Advantage of trajectory g in a group: `A_g = R_g - mean_g' R_g'` (no std or length
normalisation; a partial group uses its actual size). Every sampled token of the trajectory
carries A_g; observation tokens carry 0.

A multi-turn trajectory becomes one datum when each observation extends the sequence built so
far (observation + action tokens of every earlier turn); only the new suffix of the observation
is appended. When an observation does not extend it (a renderer that rewrites history), the
sequence so far is closed as a datum and a new one starts. Per token of the full sequence:

    token:      ob ... ob  ac ... ac  ob' ... ac' ...
    logprobs:   0  ... 0   lp ... lp  0   ... lp'
    advantages: 0  ... 0   A  ... A   0   ... A
    mask:       0  ... 0   1  ... 1   0   ... 1

then shifted per the Datum contract: input = seq[:-1], target_tokens/logprobs/advantages/mask =
their values at seq[1:]. `mask` is for the host only (KL penalty, sampler-vs-trainer KL); the
built-in losses read target_tokens, logprobs and advantages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxcook.rl.types import Trajectory, TrajectoryGroup
from jaxcook.types import Datum, ModelInput

RL_LOSS_KEYS = ("target_tokens", "logprobs", "advantages")


def compute_advantages(groups_P: Sequence[TrajectoryGroup]) -> list[np.ndarray]:
    """Per group, `adv_G = R_G - mean(R_G)` (float32)."""
    advantages_P = []
    for group in groups_P:
        rewards_G = np.asarray(group.get_total_rewards(), dtype=np.float64)
        centred_G = rewards_G - rewards_G.mean() if rewards_G.size else rewards_G
        advantages_P.append(centred_G.astype(np.float32))
    return advantages_P


def remove_constant_reward_groups(groups_P: Sequence[TrajectoryGroup]) -> list[TrajectoryGroup]:
    """Drop groups whose total rewards are all equal (zero advantage, no gradient).

    If every group is constant, the first is kept so the batch is not empty.
    """
    kept = [g for g in groups_P if len(set(g.get_total_rewards())) > 1]
    if not kept and groups_P:
        return list(groups_P[:1])
    return kept


class _SequenceBuilder:
    """Accumulates the full-sequence token, logprob, advantage and mask lists of one datum."""

    def __init__(self):
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.advantages: list[float] = []
        self.mask: list[float] = []

    def add(self, tokens: Sequence[int], logprobs: Sequence[float], advantage: float, mask: float):
        self.tokens.extend(int(t) for t in tokens)
        self.logprobs.extend(float(x) for x in logprobs)
        self.advantages.extend([advantage] * len(tokens))
        self.mask.extend([mask] * len(tokens))

    def to_datum(self) -> Datum | None:
        """The shifted datum, or None when it would train nothing."""
        if len(self.tokens) < 2 or not any(self.mask[1:]):
            return None
        return Datum(
            ModelInput.from_ints(self.tokens[:-1]),
            {
                "target_tokens": np.asarray(self.tokens[1:], np.int32),
                "logprobs": np.asarray(self.logprobs[1:], np.float32),
                "advantages": np.asarray(self.advantages[1:], np.float32),
                "mask": np.asarray(self.mask[1:], np.float32),
            },
        )


def trajectory_to_data(traj: Trajectory, advantage: float) -> list[Datum]:
    """The datums of one trajectory (one per maximal run of extending observations)."""
    data: list[Datum] = []
    seq = _SequenceBuilder()
    for turn, transition in enumerate(traj.transitions):
        ob_tokens = transition.ob.to_ints()
        if seq.tokens and ob_tokens[: len(seq.tokens)] == seq.tokens:
            delta = ob_tokens[len(seq.tokens) :]
        else:
            if seq.tokens and (datum := seq.to_datum()) is not None:
                data.append(datum)
            seq = _SequenceBuilder()
            delta = ob_tokens
        seq.add(delta, [0.0] * len(delta), 0.0, 0.0)
        ac = transition.ac
        if ac.maybe_logprobs is None:
            raise ValueError(
                f"trajectory turn {turn}: the action has no logprobs; RL training needs a "
                "TokenCompleter that returns sampled-token logprobs"
            )
        seq.add(ac.tokens, ac.maybe_logprobs, float(advantage), 1.0)
    if (datum := seq.to_datum()) is not None:
        data.append(datum)
    return data


def assemble_training_data(
    groups_P: Sequence[TrajectoryGroup], advantages_P: Sequence[np.ndarray]
) -> tuple[list[Datum], list[dict[str, int]]]:
    """All datums of a batch, and for each `{"group_idx", "traj_idx"}` it came from."""
    if len(groups_P) != len(advantages_P):
        raise ValueError(f"{len(groups_P)} groups but {len(advantages_P)} advantage arrays")
    data_D: list[Datum] = []
    meta_D: list[dict[str, int]] = []
    for i_group, (group, adv_G) in enumerate(zip(groups_P, advantages_P)):
        if len(adv_G) != len(group.trajectories_G):
            raise ValueError(
                f"group {i_group}: {len(group.trajectories_G)} trajectories but {len(adv_G)} advantages"
            )
        for i_traj, (traj, adv) in enumerate(zip(group.trajectories_G, adv_G)):
            new = trajectory_to_data(traj, float(adv))
            data_D.extend(new)
            meta_D.extend({"group_idx": i_group, "traj_idx": i_traj} for _ in new)
    return data_D, meta_D


def select_loss_inputs(data_D: Sequence[Datum], keys: Sequence[str] = RL_LOSS_KEYS) -> list[Datum]:
    """The datums with only `keys` in `loss_fn_inputs` (e.g. drop the host-only `mask`)."""
    return [Datum(d.model_input, {k: d.loss_fn_inputs[k] for k in keys}) for d in data_D]
