"""HDF5 and JSON on disk, without pickle: recorded sample batches, checkpoints,
env state snapshots."""

from __future__ import annotations

from hpcrl.io.batch_reader import BatchReader
from hpcrl.io.batch_writer import BatchWriter
from hpcrl.io.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints

__all__ = ["BatchReader", "BatchWriter", "CheckpointError", "latest_checkpoint", "list_checkpoints"]
