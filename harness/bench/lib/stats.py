"""The one summary the benches give of repeated runs: median, min and max."""

from __future__ import annotations

import statistics
from typing import Iterable, Optional, Tuple


def spread(values: Iterable[Optional[float]]) -> Tuple[Optional[float], ...]:
    """(median, min, max) of the @p values that are not None, or three Nones."""
    kept = [v for v in values if v is not None]
    if not kept:
        return None, None, None
    return statistics.median(kept), min(kept), max(kept)
