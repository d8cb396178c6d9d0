"""File fingerprints shared by the model manifest, dataset shards and bag provenance.

One implementation so a hash written by one layer (a dataset manifest, the
model manifest) is checked by another with exactly the same function.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (model files and shards can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
