"""Helpers shared by the core tests."""

from __future__ import annotations

import random
import string


def make_secret(length: int, seed: str) -> str:
    """A deterministic, varied, non-sample secret of ``length`` ASCII characters."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits
    return "".join(rng.choice(alphabet) for _ in range(length))
