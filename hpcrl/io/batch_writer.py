"""BatchWriter: a process's sample batches, appended to an HDF5 file of its own.

With ``config["output"] = DIR`` every rollout worker that samples (the
driver's local worker when it samples, and each remote worker) writes the
batches ``sample()`` returns (postprocessed) to its own file in ``DIR``:
no locks and no shared file, on any backend.

File layout (every attribute holding structure is a JSON string)::

    /                       format="hpcrl.sample_batches", format_version, batch_type
                            ("SampleBatch" or "MultiAgentBatch"), worker_index, pid,
                            host, created, hpcrl_version, config
    /index                  int64 [batches, 1 + policies]: each batch's env steps, then
                            the end row of each policy's rows (attribute "columns")
    /policies/<policy_id>   attributes observation_space, action_space, columns
        <column>            a dataset per column, resizable along rows, in chunks of
                            about a quarter of a batch
                            (see hpcrl.io.batch_columns for dict, tuple and JSON columns)

Batch ``b`` of a policy is rows ``index[b-1, p]:index[b, p]`` of its columns
(from row 0 for the first batch).

Crash safety. A file is written in HDF5's single-writer/multiple-reader
(SWMR) mode, in which the library flushes metadata in an order that keeps
the file valid on disk at every moment. Each ``write`` appends the columns,
flushes, and only then appends the batch's row to ``/index`` and flushes
again: the index row is the commit record, and readers read only indexed
rows. A new file is written under ``NAME.h5.tmp`` until its first batch is
committed and SWMR mode has started, then renamed. A writer killed at any
moment (``kill -9``) therefore leaves every batch whose ``write`` returned
readable, and at most a ``.tmp`` file that readers ignore. Open a file that
may still be open for writing, or whose writer died, with
``h5py.File(path, "r", swmr=True)`` (``BatchReader`` does); without
``swmr=True`` HDF5 refuses it as "already open for write". SWMR needs a
file system with POSIX write semantics (local disks, Lustre, GPFS; not NFS).

A new file is started when a batch's columns (names, dtypes, row shapes) or
policies differ from the current file's.
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
import os
import socket
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from hpcrl.io.batch_columns import Leaf, flatten_columns
from hpcrl.io.json_values import json_safe
from hpcrl.io.spaces import space_to_json
from hpcrl.policy.sample_batch import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch

FORMAT = "hpcrl.sample_batches"
FORMAT_VERSION = 1

# A chunk holds about a quarter of a batch of its column, within these sizes: the
# batch's last chunk is usually partial when the batch is flushed, and is written
# (compressed) again once the next batch fills it, so smaller chunks waste less.
CHUNKS_PER_BATCH = 4
_MIN_CHUNK_BYTES = 4 * 1024
_MAX_CHUNK_BYTES = 1024 * 1024
_JSON_CHUNK_BYTES = 64 * 1024
# HDF5's chunk cache, per dataset: none. A writer never reads back, and HDF5 writes
# uncached chunks straight to the file (a filtered partial chunk is read back once,
# to be completed). HDF5 2.0's default of 8 MiB a dataset made a worker's writer of
# 16 columns grow by ~130 MiB over the first ~15 minutes of a run
# (benchmarks/soak.py), and wrote no faster (benchmarks/hdf5_io.py).
CHUNK_CACHE_BYTES = 0
_file_numbers = itertools.count()


def parse_compression(compress: str | None) -> tuple[str | None, int | None]:
    """``(filter, level)`` for h5py from the ``output_compress`` setting.

    Example:
        >>> parse_compression("gzip:6"), parse_compression(None)
        (('gzip', 6), (None, None))
    """
    if compress is None or compress == "none":
        return None, None
    if compress == "lzf":
        return "lzf", None
    name, _, level = str(compress).partition(":")
    if name == "gzip" and (not level or (level.isdigit() and 1 <= int(level) <= 9)):
        return "gzip", int(level) if level else 4
    raise ValueError(
        f"output_compress={compress!r}; expected None, 'gzip' (level 4), 'gzip:1' to "
        "'gzip:9', or 'lzf'"
    )


def chunk_rows(row_bytes: int, batch_rows: int) -> int:
    """Rows per chunk of a column whose rows have ``row_bytes`` bytes, for batches of
    about ``batch_rows`` rows.

    Example:
        >>> chunk_rows(16, 2048), chunk_rows(84 * 84 * 4, 512)
        (512, 37)
    """
    row_bytes = max(1, row_bytes)
    rows = -(-batch_rows // CHUNKS_PER_BATCH)
    rows = max(rows, -(-_MIN_CHUNK_BYTES // row_bytes))
    return max(1, min(rows, _MAX_CHUNK_BYTES // row_bytes))


class BatchWriter:
    """Appends batches to ``DIR/batches_<time>_worker<i>_<host>_<pid>_<n>.h5``.

    Args:
        directory: where to write (created if missing).
        worker_index: the writing worker's index (0 = the driver's local worker).
        compress: None, "gzip", "gzip:N" (N = 1..9) or "lzf".
        config: recorded as the file's ``config`` attribute (JSON).
        spaces: policy id -> (observation space, action space), recorded per policy.

    Example:
        >>> import tempfile
        >>> from hpcrl.io.batch_reader import BatchReader
        >>> directory = tempfile.mkdtemp()
        >>> with BatchWriter(directory) as writer:
        ...     writer.write(SampleBatch({"obs": np.zeros((3, 2)), "actions": [0, 1, 1]}))
        >>> [batch["actions"].tolist() for batch in BatchReader(directory)]
        [[0, 1, 1]]
    """

    def __init__(
        self,
        directory: str,
        *,
        worker_index: int = 0,
        compress: str | None = None,
        config: dict[str, Any] | None = None,
        spaces: dict[str, tuple[gym.Space, gym.Space]] | None = None,
    ) -> None:
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"output must be a directory path, got {directory!r}")
        self.directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
        self.worker_index = int(worker_index)
        self.compression, self.compression_level = parse_compression(compress)
        self._config_json = json.dumps(json_safe(config or {}), sort_keys=True)
        self._spaces = dict(spaces or {})
        self._stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self._file: h5py.File | None = None
        self._schema: Any = None
        self._datasets: dict[tuple[str, str], _Appender] = {}
        self._index: _Appender | None = None
        self._policy_ids: list[str] = []
        self._row_counts: dict[str, int] = {}
        self.path: str | None = None
        self.num_batches = 0
        self.paths: list[str] = []

    # -- writing ---------------------------------------------------------
    def write(self, batch: SampleBatch | MultiAgentBatch) -> None:
        """Append one batch; once this returns, the batch survives a crash of the process."""
        batch_type, env_steps, policies = _policy_batches(batch)
        if env_steps == 0:
            return
        flat = {pid: flatten_columns(columns) for pid, columns in policies.items()}
        for pid, (leaves, _) in flat.items():
            _check_rows(pid, leaves, _num_rows(policies[pid]))
        schema = _schema(batch_type, flat)
        first = self._file is None or schema != self._schema
        if first:
            self._open_file(batch_type, schema, policies, flat)
        try:
            self._append(env_steps, policies, flat)
        except BaseException:
            # Rows appended without their index row are never read, but later batches
            # must not land after them: the next write starts a new file.
            self.close()
            raise
        if first:
            self._file.swmr_mode = True
            os.replace(self.path + ".tmp", self.path)
            self.paths.append(self.path)
        self.num_batches += 1

    def _append(
        self,
        env_steps: int,
        policies: dict[str, dict[str, Any]],
        flat: dict[str, tuple[list[Leaf], list[tuple[str, dict[str, Any]]]]],
    ) -> None:
        ends = []
        for pid in self._policy_ids:
            json_base: dict[str, int] = {}
            for leaf in flat[pid][0]:
                dataset = self._datasets[(pid, leaf.path)]
                group_path = leaf.path.rsplit("/", 1)[0]
                if not leaf.per_row:  # JSON documents: their row ends follow
                    json_base[group_path] = dataset.length
                values = leaf.array + json_base[group_path] if leaf.json_ends else leaf.array
                dataset.append(values)
            self._row_counts[pid] += _num_rows(policies[pid])
            ends.append(self._row_counts[pid])
        self._file.flush()
        # The commit: readers see the batch once its index row is on disk.
        self._index.append(np.array([[env_steps, *ends]], dtype=np.int64))
        self._file.flush()

    def close(self) -> None:
        """Close the current file (it stays readable; a later write starts a new one)."""
        if self._file is not None:
            self._file.close()
        self._file = None
        self._schema = None
        self._datasets.clear()

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- files -----------------------------------------------------------
    def _open_file(
        self,
        batch_type: str,
        schema: Any,
        policies: dict[str, dict[str, Any]],
        flat: dict[str, tuple[list[Leaf], list[tuple[str, dict[str, Any]]]]],
    ) -> None:
        self.close()
        os.makedirs(self.directory, exist_ok=True)
        host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname())
        name = (
            f"batches_{self._stamp}_worker{self.worker_index}_{host}_{os.getpid()}_"
            f"{next(_file_numbers):04d}.h5"
        )
        self.path = os.path.join(self.directory, name)
        f = h5py.File(self.path + ".tmp", "w", libver="latest", rdcc_nbytes=CHUNK_CACHE_BYTES)
        f.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "batch_type": batch_type,
                "worker_index": self.worker_index,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "created": datetime.datetime.now().isoformat(timespec="seconds"),
                "hpcrl_version": _hpcrl_version(),
                "config": self._config_json,
            }
        )
        self._policy_ids = list(policies)
        self._row_counts = dict.fromkeys(self._policy_ids, 0)
        index = f.create_dataset(
            "index",
            shape=(0, 1 + len(policies)),
            maxshape=(None, 1 + len(policies)),
            dtype=np.int64,
            chunks=(256, 1 + len(policies)),
        )
        index.attrs["columns"] = json.dumps(["env_steps", *self._policy_ids])
        self._index = _Appender(index)
        for pid, (leaves, groups) in flat.items():
            group = f.create_group(f"policies/{pid}")
            group.attrs["columns"] = json.dumps(list(policies[pid]))
            if pid in self._spaces:
                obs_space, action_space = self._spaces[pid]
                group.attrs["observation_space"] = space_to_json(obs_space)
                group.attrs["action_space"] = space_to_json(action_space)
            for path, attrs in groups:
                group.create_group(path).attrs.update(attrs)
            rows = _num_rows(policies[pid])
            for leaf in leaves:
                self._datasets[(pid, leaf.path)] = self._create_dataset(group, leaf, rows)
        self._file = f
        self._schema = schema

    def _create_dataset(self, group: h5py.Group, leaf: Leaf, rows: int) -> _Appender:
        tail = leaf.array.shape[1:]
        row_bytes = leaf.array.dtype.itemsize * math.prod(tail)
        rows_per_chunk = chunk_rows(row_bytes, rows) if leaf.per_row else _JSON_CHUNK_BYTES
        dataset = group.create_dataset(
            leaf.path,
            shape=(0, *tail),
            maxshape=(None, *tail),
            dtype=leaf.array.dtype,
            chunks=(rows_per_chunk, *tail),
            compression=self.compression,
            compression_opts=self.compression_level,
        )
        return _Appender(dataset)


class _Appender:
    """Appends rows to a resizable dataset through h5py's low-level calls (about
    a third of the time of ``resize`` plus slice assignment)."""

    def __init__(self, dataset: h5py.Dataset) -> None:
        self.dataset = dataset
        self.length = dataset.shape[0]
        self._tail = dataset.shape[1:]
        self._dtype = dataset.dtype

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self._dtype)
        count = len(values)
        if count == 0:
            return
        shape = (count, *self._tail)
        dataset_id = self.dataset.id
        dataset_id.set_extent((self.length + count, *self._tail))
        file_space = dataset_id.get_space()
        file_space.select_hyperslab((self.length,) + (0,) * len(self._tail), shape)
        dataset_id.write(h5py.h5s.create_simple(shape), file_space, values)
        self.length += count


def _policy_batches(
    batch: SampleBatch | MultiAgentBatch,
) -> tuple[str, int, dict[str, dict[str, Any]]]:
    if isinstance(batch, MultiAgentBatch):
        policies = {pid: _stored_columns(b) for pid, b in batch.policy_batches.items()}
        return "MultiAgentBatch", batch.env_steps(), policies
    if isinstance(batch, dict):
        columns = _stored_columns(batch)
        return "SampleBatch", _num_rows(columns), {DEFAULT_POLICY_ID: columns}
    raise TypeError(f"BatchWriter.write takes a SampleBatch or MultiAgentBatch, got {batch!r}")


def _check_rows(pid: str, leaves: list[Leaf], rows: int) -> None:
    for leaf in leaves:
        if leaf.per_row and len(leaf.array) != rows:
            raise ValueError(
                f"column {leaf.path!r} of policy {pid!r} has {len(leaf.array)} rows, the "
                f"batch {rows}: every column needs one row per step"
            )


def _stored_columns(batch: dict[str, Any]) -> dict[str, Any]:
    # seq_lens has one entry per sequence, not per row; it follows from eps_id and
    # the recurrent model's max_seq_len, so it is not stored.
    return {k: v for k, v in batch.items() if k != SampleBatch.SEQ_LENS}


def _num_rows(columns: dict[str, Any]) -> int:
    for value in columns.values():
        while isinstance(value, (dict, tuple)):
            value = next(iter(value.values())) if isinstance(value, dict) else value[0]
        return len(value)
    return 0


def _schema(
    batch_type: str, flat: dict[str, tuple[list[Leaf], list[tuple[str, dict[str, Any]]]]]
) -> tuple:
    return (
        batch_type,
        tuple(
            (
                pid,
                tuple((leaf.path, leaf.array.dtype.str, leaf.array.shape[1:]) for leaf in leaves),
                tuple((path, tuple(sorted(attrs.items()))) for path, attrs in groups),
            )
            for pid, (leaves, groups) in flat.items()
        ),
    )


def _hpcrl_version() -> str:
    from hpcrl import __version__

    return __version__
