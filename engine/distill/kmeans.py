"""k-means for DREAM's representative selection: fit centroids (scikit-learn's on the CPU: it takes sample
weights and is k-means++ seeded and well tested; a torch Lloyd iteration on a GPU, so the features never leave the
device), the single nearest distinct image to each centroid, and how k is shared between attribute groups.
docs/DISTILL.md "DREAM".
"""
from __future__ import annotations

import torch

LLOYD_STEPS = 20   # the GPU path's iterations (scikit-learn stops on its own tolerance, at most 300)


def fit(x: torch.Tensor, k: int, seed: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """k centroids of the rows of x (n x d, k <= n), optionally sample-weighted; deterministic in seed."""
    if not 0 < k <= len(x):
        raise ValueError(f"k-means: k={k} needs 1..{len(x)} points")
    if x.device.type == "cpu":
        from sklearn.cluster import KMeans  # imported here: the CPU path only
        km = KMeans(n_clusters=k, n_init=1, random_state=seed)
        km.fit(x.double().numpy(), sample_weight=None if weights is None else weights.double().numpy())
        return torch.from_numpy(km.cluster_centers_).to(x.dtype)
    return _lloyd(x, k, seed, weights)


def _lloyd(x: torch.Tensor, k: int, seed: int, weights: torch.Tensor | None) -> torch.Tensor:
    """Weighted Lloyd iterations on x's device from a k-means++ start (the GPU path)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.ones(len(x), device=x.device) if weights is None else weights.to(x.device, torch.float32)
    xf = x.float()
    centers = xf[[int(torch.multinomial(w.cpu(), 1, generator=g))]]
    for _ in range(1, k):  # k-means++: each next centre drawn with probability w x squared distance
        d2 = torch.cdist(xf, centers).min(1).values ** 2 * w
        p = d2.cpu().double() if float(d2.sum()) > 0 else w.cpu().double()
        centers = torch.cat([centers, xf[[int(torch.multinomial(p, 1, generator=g))]]])
    centers = centers.clone()
    for _ in range(LLOYD_STEPS):
        assign = torch.cdist(xf, centers).argmin(1)
        mass = torch.zeros(k, device=x.device).index_add_(0, assign, w)
        sums = torch.zeros_like(centers).index_add_(0, assign, xf * w[:, None])
        moved = mass > 0   # an empty cluster keeps its centre
        centers[moved] = sums[moved] / mass[moved, None]
    return centers.to(x.dtype)


def nearest(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """For each centroid the nearest row of x not already taken by an earlier centroid (distinct rows)."""
    dist = torch.cdist(centers.float(), x.float())
    taken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    out = []
    for row in dist:
        row = row.masked_fill(taken, float("inf"))
        i = int(row.argmin())
        taken[i] = True
        out.append(i)
    return torch.tensor(out, dtype=torch.long)


def representatives(x: torch.Tensor, k: int, seed: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """DREAM's pick: k-means on x, then the nearest distinct row to each centroid (all rows when k >= len(x))."""
    if k >= len(x):
        return torch.arange(len(x))
    return nearest(x, fit(x, k, seed, weights))


def shares(sizes: list[int], k: int) -> list[int]:
    """k split as equally as the groups' sizes allow (water-filling): a group never gets more than it has,
    what it cannot take goes to the others; every group with images gets at least one (k grows if needed)."""
    present = [i for i, n in enumerate(sizes) if n > 0]
    out = [0] * len(sizes)
    left, open_ = max(k, len(present)), list(present)
    while left > 0 and open_:
        each, extra = divmod(left, len(open_))
        for j, i in enumerate(open_):
            give = min(each + (j < extra), sizes[i] - out[i])
            out[i] += give
            left -= give
        open_ = [i for i in open_ if out[i] < sizes[i]]
    return out


def equal_shares(sizes: list[int], k: int) -> list[int]:
    """k split equally over the groups with images (remainder to the first ones), regardless of their sizes:
    a group with fewer images than its share repeats them (the group-balanced batch)."""
    present = [i for i, n in enumerate(sizes) if n > 0]
    out = [0] * len(sizes)
    each, extra = divmod(max(k, len(present)), len(present)) if present else (0, 0)
    for j, i in enumerate(present):
        out[i] = each + (j < extra)
    return out


def cycle(index: torch.Tensor, n: int) -> torch.Tensor:
    """n entries of index, repeating it in order when it is shorter."""
    reps = -(-n // max(len(index), 1))
    return index.repeat(reps)[:n]


__all__ = ["cycle", "equal_shares", "fit", "nearest", "representatives", "shares"]
