"""Where a clip goes, as seeded hashes of names: the split (train, val, test) of a person, and
the shard that tracks a clip; neither depends on the other clips, the run or their order."""
from __future__ import annotations

import hashlib
import re

from gagavatar.data.format import SPLITS
from gagavatar.tracking.clips import Clip


def split_of(identity: str, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05), seed: int = 0) -> str:
    """The split (train, val or test) of one person: a seeded hash of the name against the fractions.

    A function of the identity alone, so it does not depend on the other clips, the
    run or the shard; about ``fractions`` of many identities fall in each split.
    """
    digest = hashlib.sha256(f"{seed}:{identity}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64  # uniform in [0, 1)
    edge = 0.0
    for split, fraction in zip(SPLITS, fractions):
        edge += fraction
        if u < edge:
            return split
    return [s for s, f in zip(SPLITS, fractions) if f > 0][-1]  # rounding at the top end


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``"0.9,0.05,0.05"`` -> train, val, test fractions (normalised to sum to 1)."""
    try:
        fractions = tuple(float(x) for x in text.split(","))
    except ValueError:
        fractions = ()
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"--splits {text!r}: give three non-negative train,val,test fractions, e.g. 0.9,0.05,0.05")
    total = sum(fractions)
    return fractions if abs(total - 1.0) < 1e-9 else tuple(f / total for f in fractions)


def parse_shard(text: str) -> tuple[int, int]:
    """``"3/8"`` -> (3, 8): the fourth of eight shards (K counts from 0, as SLURM_ARRAY_TASK_ID)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"--shard {text!r}: give K/N with 0 <= K < N, e.g. --shard 0/8 ... --shard 7/8")
    return int(m.group(1)), int(m.group(2))


def shard_of(clip: Clip, n_shards: int) -> int:
    """Which of ``n_shards`` shards tracks a clip: a hash of its name, so it does not depend on the
    other clips, on which are finished, or on the order of a list."""
    return int.from_bytes(hashlib.sha256(clip.name.encode()).digest()[:8], "big") % n_shards
