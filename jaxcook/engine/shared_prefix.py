"""Shared prefixes: which datums of one call start alike, so that their batch holds that start once.

An RL group's samples share their prompt, a DPO pair its prompt. `plan_groups` finds such
datums (the same leading input tokens and targets, at positions the loss does not read) and
groups them; `make_batch` then lays each group out as one segment: the owner (the group's first
datum) whole, then every other member without the shared positions, its positions continuing
from the prefix's length and its tokens on a branch of their own, so that attention lets it see
the prefix and itself only (`models.attention`).

This is exact: a shared position is one whose log-prob no member's loss reads
(`core.losses.positions_read`), so it counts for nothing whatever its value, and its hidden
state, which depends only on the tokens up to it, is the same in every member. The branch
positions see the same keys at the same positions as in their own row, so their log-probs are
those of the unshared layout (up to float rounding); `unbatch` copies the prefix's slots back
into every member, so the outputs come back whole, in the input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Fewest shared positions worth a group: fewer save less than the longer row costs.
MIN_SHARED = 16


@dataclass(frozen=True)
class Group:
    """Datums laid out together: `members` (indices, the owner first) share `shared` positions."""

    members: tuple[int, ...]
    shared: int = 0


def _lcp(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two arrays along axis 0."""
    n = min(len(a), len(b))
    diff = (a[:n] != b[:n]).reshape(n, -1).any(axis=1)
    hits = np.flatnonzero(diff)
    return int(hits[0]) if len(hits) else n


def plan_groups(
    tokens_N: Sequence[np.ndarray],
    targets_N: Sequence[np.ndarray],
    read_N: Sequence[np.ndarray | None],
    *,
    max_len: int,
    min_shared: int = MIN_SHARED,
) -> list[Group]:
    """Every datum in exactly one `Group`; singletons share nothing.

    `read_N[i]` (bool `[length]`, None = every position) marks the positions datum i's loss
    reads. A datum can share its positions before the first read one, and never its last
    position (each member keeps a slot of its own). Datums are sorted by their shareable
    tokens, and each joins the group before it when that saves tokens (g members sharing S
    positions save (g - 1) * S) and the group still fits in `max_len` slots.
    """
    n = len(tokens_N)
    lengths_N = [len(t) for t in tokens_N]
    limit_N = []
    for i in range(n):
        read = read_N[i]
        hits = np.flatnonzero(read) if read is not None else np.zeros(1, np.int64)
        first = int(hits[0]) if len(hits) else lengths_N[i]
        limit_N.append(min(first, lengths_N[i] - 1))
    order = sorted(
        (i for i in range(n) if limit_N[i] >= min_shared),
        key=lambda i: (tokens_N[i][: limit_N[i]].tolist(), i),
    )
    groups: list[Group] = []
    members: list[int] = []
    shared = 0

    def close():
        if members:
            groups.append(Group(tuple(members), shared if len(members) > 1 else 0))

    for i in order:
        if members:
            last = members[-1]
            s = min(
                shared,
                limit_N[i],
                _lcp(tokens_N[last], tokens_N[i]),
                _lcp(targets_N[last], targets_N[i]),
            )
            g = len(members)
            unit = sum(lengths_N[m] for m in members) + lengths_N[i] - g * s
            if s >= min_shared and g * s > (g - 1) * shared and unit <= max_len:
                members.append(i)
                shared = s
                continue
        close()
        members, shared = [i], limit_N[i]
    close()
    grouped = {m for g in groups for m in g.members}
    groups += [Group((i,)) for i in range(n) if i not in grouped]
    return sorted(groups, key=lambda g: min(g.members))
