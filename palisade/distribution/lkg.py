"""Last-known-good bundle on disk, written atomically.

The file holds the serialized ``SignedBundle`` exactly as received, so it is
verified again on load with the keys trusted at that time. Writes go to a
temporary file in the same directory, are fsynced and renamed over the old one:
a crash leaves either the old or the new bundle, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from palisade.v1 import bundle_pb2


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class LastKnownGood:
    """One file: the bundle most recently activated."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def save(self, bundle: bundle_pb2.SignedBundle) -> None:
        atomic_write(self.path, bundle.SerializeToString())

    def load(self) -> bundle_pb2.SignedBundle | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        bundle = bundle_pb2.SignedBundle()
        bundle.ParseFromString(data)
        return bundle
