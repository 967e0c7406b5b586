"""The math of RePr (Prakash et al., CVPR 2019), free of any training code: filter overlap, rankings, and
orthogonal re-initialization directions.

- ``overlap_matrix(w)``: flatten each of the F filters of a conv weight (F, C, k, k), L2-normalize the rows
  to W, ``P = |W W^T - I|``. The diagonal is set to 0 explicitly, so a zero (dropped) filter, whose
  normalized row is 0, does not score 1 against itself.
- ``filter_scores(w)``: the mean of a filter's row of P over the F - 1 OTHER filters (the paper divides
  by the layer's filter count J_l, i.e. F including the zero diagonal). With F - 1 a layer of identical
  filters scores exactly 1 and an orthogonal one 0 whatever its width, so a global ranking does not
  favour narrow layers by a factor (F - 1) / F.
- ``select_global``: the top fraction of all scores of all layers together (the paper ranks globally),
  never a layer's last filter.
- ``null_space_directions``: unit directions orthogonal to a set of vectors, from the complete QR
  decomposition of the stacked vectors (``torch.linalg.qr``); fewer than asked when the space is too
  small, and the caller says so.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def flatten_filters(weight: torch.Tensor) -> torch.Tensor:
    """(F, C, k, k) -> (F, C*k*k) in float64 (the overlap and QR math wants the precision)."""
    return weight.detach().reshape(weight.shape[0], -1).to(torch.float64)


def overlap_matrix(weight: torch.Tensor) -> torch.Tensor:
    """``P = |W W^T - I|`` of the normalized flattened filters (F, F), zero diagonal."""
    w = F.normalize(flatten_filters(weight), dim=1)
    p = (w @ w.T).abs()
    p.fill_diagonal_(0.0)
    return p


def filter_scores(weight: torch.Tensor) -> torch.Tensor:
    """Per-filter overlap (F,): mean |cosine| with the F - 1 other filters of the layer; high = redundant."""
    n = weight.shape[0]
    if n < 2:
        return torch.zeros(n, dtype=torch.float64)
    return overlap_matrix(weight).sum(1) / (n - 1)


def norm_scores(weight: torch.Tensor) -> torch.Tensor:
    """Ranking by weight magnitude: minus the filter's L2 norm, so the LOWEST norm scores highest (dropped first)."""
    return -flatten_filters(weight).norm(dim=1)


def random_scores(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random ranking (a control): uniform scores from ``generator``."""
    return torch.rand(weight.shape[0], generator=generator, dtype=torch.float64)


RANKINGS = ("orthogonality", "norm", "random")


def rank_scores(weight: torch.Tensor, ranking: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scores where higher means "drop first", for one of ``RANKINGS``."""
    if ranking == "orthogonality":
        return filter_scores(weight)
    if ranking == "norm":
        return norm_scores(weight)
    if ranking == "random":
        return random_scores(weight, generator)
    raise ValueError(f"unknown RePr ranking {ranking!r}; choose one of {', '.join(RANKINGS)}")


def select_global(scores: dict[str, torch.Tensor], fraction: float) -> dict[str, list[int]]:
    """Drop the ``round(fraction * total)`` highest scores over all layers together.

    A layer never loses its last filter (a sequential net would be cut in two): such a candidate is
    passed over for the next one.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the RePr prune fraction must be in [0, 1), got {fraction}")
    names = list(scores)
    flat = torch.cat([scores[n].to(torch.float64).flatten() for n in names]) if names else torch.zeros(0)
    owner = torch.cat([torch.full((len(scores[n]),), i) for i, n in enumerate(names)]) if names else torch.zeros(0)
    local = torch.cat([torch.arange(len(scores[n])) for n in names]) if names else torch.zeros(0)
    budget = int(round(fraction * len(flat)))
    left = {n: len(scores[n]) for n in names}
    dropped: dict[str, list[int]] = {n: [] for n in names}
    taken = 0
    for i in torch.sort(flat, descending=True, stable=True).indices.tolist():
        if taken >= budget:
            break
        name = names[int(owner[i])]
        if left[name] <= 1:
            continue
        dropped[name].append(int(local[i]))
        left[name] -= 1
        taken += 1
    return {n: sorted(v) for n, v in dropped.items()}


def null_space_directions(
    constraints: torch.Tensor, count: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Up to ``count`` orthonormal directions (m, D) orthogonal to every row of ``constraints`` (r, D).

    The complete QR of ``constraints^T`` (D, r) gives Q (D, D); its last D - r columns are orthogonal to
    the span of the first r, which contains every constraint (even a rank-deficient set). A random
    combination of them, orthonormalized by a second QR, gives directions that are orthogonal to the
    constraints and to each other without being the same fixed basis vectors every cycle.
    m = min(count, D - r): fewer than asked means the null space is too small.
    """
    d = constraints.shape[1]
    rows = constraints.to(torch.float64)
    rows = rows[rows.norm(dim=1) > 0]
    r = rows.shape[0]
    m = max(0, min(count, d - r))
    if m == 0:
        return torch.zeros(0, d, dtype=torch.float64)
    if r:
        q, _ = torch.linalg.qr(F.normalize(rows, dim=1).T, mode="complete")
        basis = q[:, r:]  # (D, D - r)
    else:
        basis = torch.eye(d, dtype=torch.float64)
    mix = torch.randn(basis.shape[1], m, generator=generator, dtype=torch.float64)
    directions, _ = torch.linalg.qr(basis @ mix)  # (D, m), orthonormal, inside the null space
    return directions.T.contiguous()


def kaiming_filter_norm(weight: torch.Tensor) -> float:
    """Expected L2 norm of one filter under ``kaiming_normal_(mode="fan_out")`` (the backbone's init)."""
    f, c, kh, kw = weight.shape
    return math.sqrt(2.0 / (f * kh * kw)) * math.sqrt(c * kh * kw)
