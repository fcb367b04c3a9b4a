"""Distinct viewers that add up: a HyperLogLog sketch of each day's viewers (Apache DataSketches), kept
with the day's sums, so a period's unique viewers is the union of its days' sketches — constant work
whatever the number of sessions, and still there after the sessions themselves are gone. A sketch of
lg_k 12 holds up to 2 KB and counts within about 1.6 % (one standard error); small counts are exact.
"""

from __future__ import annotations

from collections.abc import Iterable

from datasketches import hll_sketch, hll_union, tgt_hll_type

LG_K = 12


def sketch_of(viewers: Iterable[str]) -> bytes:
    sketch = hll_sketch(LG_K, tgt_hll_type.HLL_4)
    for viewer in viewers:
        sketch.update(viewer)
    return bytes(sketch.serialize_compact())


def count_viewers(sketches: Iterable[bytes | None], viewers: Iterable[str] = ()) -> int:
    """Distinct viewers in the union of `sketches` and `viewers` (estimated, exact when few)."""
    union = hll_union(LG_K)
    for data in sketches:
        if data:
            union.update(hll_sketch.deserialize(data))
    union.update(hll_sketch.deserialize(sketch_of(viewers)))
    return int(round(union.get_estimate()))
