"""How texts are grouped into inference runs when the engine is handed an arrival-order batch."""

from __future__ import annotations

import math
from collections.abc import Sequence

# What one extra ONNX Runtime run costs, in padded tokens. Measured on the FinBERT-shaped row-wise int8
# export, 2 threads, serve's arrival batches (640 headlines in batches of 32, CPU seconds per text,
# three interleaved rounds): 32 and 64 cost 10-20 % less than 128 (and than 256 or 512), about what
# the same texts cost sorted all at once; 0 (a run per length) costs more. Smaller models only split
# less than they could.
RUN_OVERHEAD_TOKENS = 48


def length_groups(lengths: Sequence[int], overhead: int = RUN_OVERHEAD_TOKENS) -> list[list[int]]:
    """Indices split into ascending-length groups minimising padded tokens plus a per-run overhead."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sizes = [lengths[i] for i in order]
    n = len(sizes)
    # best[j]: cheapest way to run the j shortest texts; each group is padded to its longest (last).
    best = [0.0] + [math.inf] * n
    start = [0] * (n + 1)
    for j in range(1, n + 1):
        width = sizes[j - 1]
        for i in range(j):
            cost = best[i] + overhead + (j - i) * width
            if cost < best[j]:
                best[j], start[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[start[j] : j])
        j = start[j]
    return groups[::-1]
