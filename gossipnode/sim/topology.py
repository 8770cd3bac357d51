"""Fixed D-PSGD graphs that need more than a formula: the random geometric graph of the SybilWall
paper's evaluation (nodes uniform in the unit square, linked within a radius, degree capped), and
Sybil identities placed in it next to the honest nodes nearest to them."""
from __future__ import annotations

import numpy as np


def rgg(n: int, radius: float, max_degree: int, rng: np.random.Generator) -> tuple[list[list[int]], np.ndarray]:
    """Neighbour lists and positions. Pairs within `radius` are linked shortest first while both
    ends have fewer than `max_degree` links; components left apart are then joined by their
    shortest pair (which may exceed the cap by one), so that the graph is connected."""
    pos = rng.uniform(size=(n, 2))
    d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    iu, ju = np.triu_indices(n, 1)
    adj: list[set[int]] = [set() for _ in range(n)]
    for k in np.argsort(d[iu, ju], kind="stable"):
        a, b = int(iu[k]), int(ju[k])
        if d[a, b] > radius:
            break
        if len(adj[a]) < max_degree and len(adj[b]) < max_degree:
            adj[a].add(b)
            adj[b].add(a)
    while True:
        seen, todo = {0}, [0]
        while todo:
            for j in adj[todo.pop()]:
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        if len(seen) == n:
            return [sorted(s) for s in adj], pos
        inside = np.array(sorted(seen))
        outside = np.array([i for i in range(n) if i not in seen])
        sub = d[np.ix_(inside, outside)]
        a, b = np.unravel_index(int(np.argmin(sub)), sub.shape)
        adj[int(inside[a])].add(int(outside[b]))
        adj[int(outside[b])].add(int(inside[a]))


def nearest_links(pos: np.ndarray, count: int, links: int, rng: np.random.Generator) -> list[list[int]]:
    """For each of `count` identities at a uniform position: its `links` nearest honest nodes."""
    out = []
    for p in rng.uniform(size=(count, 2)):
        dist = ((pos - p) ** 2).sum(-1)
        out.append(sorted(int(i) for i in np.argsort(dist, kind="stable")[: min(links, len(pos))]))
    return out
