"""BatchReader: batches back from the HDF5 files ``BatchWriter`` wrote.

With ``config["input"] = DIR`` (or a list of files) a rollout worker's
``sample()`` returns the next recorded batch instead of stepping envs, for
algorithms that learn offline (``BC``).
"""

from __future__ import annotations

import glob
import json
import os
import struct
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from hpcrl.io.batch_columns import read_columns
from hpcrl.io.batch_writer import FORMAT, FORMAT_VERSION
from hpcrl.io.json_values import loads
from hpcrl.io.spaces import space_from_json
from hpcrl.policy.sample_batch import MultiAgentBatch, SampleBatch

# Files kept open at once (each open file holds a file descriptor).
_MAX_OPEN_FILES = 32


def input_files(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The batch files named by ``config["input"]``: a directory (its ``*.h5``
    files, sorted), a file, or a list of files and directories.

    Raises:
        ValueError: a path that does not exist, or no files at all.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files: list[str] = []
    for item in items:
        path = os.path.abspath(os.path.expanduser(os.fspath(item)))
        if os.path.isdir(path):
            files += sorted(glob.glob(os.path.join(glob.escape(path), "*.h5")))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise ValueError(
                f"input {os.fspath(item)!r} is neither a directory nor a file; give the "
                "directory that config['output'] wrote to, or a list of its .h5 files"
            )
    if not files:
        raise ValueError(
            f"no batch files (*.h5) in input {inputs!r}; record some first with "
            "config['output'] = DIR"
        )
    return files


class BatchFile:
    """One file of recorded batches, opened for reading (SWMR, so a file still
    being written, or whose writer died, reads up to its last committed batch).

    Raises:
        ValueError: the file is not an hpcrl batch file, is newer than this
            hpcrl reads, or cannot be opened as HDF5.

    Example:
        >>> import tempfile
        >>> from hpcrl.io.batch_writer import BatchWriter
        >>> with BatchWriter(tempfile.mkdtemp()) as writer:
        ...     writer.write(SampleBatch({"rewards": np.ones(4)}))
        >>> batch_file = BatchFile(writer.paths[0])
        >>> len(batch_file), batch_file.read(0).count
        (1, 4)
        >>> batch_file.close()
    """

    def __init__(self, path: str) -> None:
        self.path = path
        _check_not_truncated(path)
        try:
            self.file = h5py.File(path, "r", libver="latest", swmr=True)
        except OSError as err:
            raise ValueError(
                f"cannot read batch file {path!r} as HDF5 ({err}); remove it from the input "
                "if it is not a batch file"
            ) from None
        attrs = self.file.attrs
        if attrs.get("format") != FORMAT:
            self.file.close()
            raise ValueError(
                f"{path!r} is not an hpcrl batch file (format attribute "
                f"{attrs.get('format')!r}, expected {FORMAT!r})"
            )
        version = int(attrs["format_version"])
        if version > FORMAT_VERSION:
            self.file.close()
            raise ValueError(
                f"{path!r} was written by a newer hpcrl (batch format version {version}; this "
                f"hpcrl reads up to {FORMAT_VERSION}): upgrade hpcrl to read it"
            )
        self.batch_type = attrs["batch_type"]
        self.worker_index = int(attrs["worker_index"])
        self.config = loads(attrs["config"])
        self.policy_ids = json.loads(self.file["index"].attrs["columns"])[1:]
        self.index = self._read_index()

    def refresh(self) -> None:
        """See the batches committed since the file was opened."""
        self.file["index"].refresh()
        self.index = self._read_index()

    def _read_index(self) -> np.ndarray:
        index = self.file["index"][...]
        # Keep the valid prefix: each batch has steps, and its row ends neither go
        # back nor pass the rows on disk (a defence; committed rows always pass).
        limits = np.array([self._rows_available(pid) for pid in self.policy_ids], dtype=np.int64)
        ends = index[:, 1:]
        previous = np.vstack([np.zeros((1, ends.shape[1]), dtype=np.int64), ends[:-1]])
        valid = (index[:, 0] > 0) & (ends >= previous).all(axis=1) & (ends <= limits).all(axis=1)
        invalid = np.flatnonzero(~valid)
        return index[: invalid[0]] if len(invalid) else index

    def _rows_available(self, pid: str) -> int:
        lengths: list[int] = []
        self.file[f"policies/{pid}"].visititems(
            lambda name, node: (
                lengths.append(node.shape[0])
                if isinstance(node, h5py.Dataset) and not name.endswith("/bytes")
                else None
            )
        )
        return min(lengths, default=0)

    def __len__(self) -> int:
        return len(self.index)

    def spaces(self) -> dict[str, tuple[gym.Space, gym.Space]]:
        """Policy id -> (observation space, action space), where they were recorded."""
        out = {}
        for pid in self.policy_ids:
            attrs = self.file[f"policies/{pid}"].attrs
            if "observation_space" in attrs:
                out[pid] = (
                    space_from_json(attrs["observation_space"]),
                    space_from_json(attrs["action_space"]),
                )
        return out

    def read(self, number: int) -> SampleBatch | MultiAgentBatch:
        """Batch ``number`` (0-based) as it was written."""
        if not 0 <= number < len(self.index):
            raise IndexError(f"{self.path!r} has {len(self.index)} batches, asked for {number}")
        policies = {}
        for p, pid in enumerate(self.policy_ids):
            start = int(self.index[number - 1, 1 + p]) if number > 0 else 0
            end = int(self.index[number, 1 + p])
            policies[pid] = _sample_batch(read_columns(self.file[f"policies/{pid}"], start, end))
        if self.batch_type == "MultiAgentBatch":
            return MultiAgentBatch(policies, int(self.index[number, 0]))
        return next(iter(policies.values()))

    def close(self) -> None:
        self.file.close()


def _check_not_truncated(path: str) -> None:
    """Raise ValueError for a file shorter than the end its HDF5 superblock records.

    Opened for SWMR reading, HDF5 does not check this and retries reading the missing
    metadata for minutes. A live or killed writer's file is never shorter: the
    superblock is written after what it counts (``BatchWriter`` flushes).
    """
    with open(path, "rb") as f:
        head = f.read(48)
    # Superblock versions 2 and 3 (libver="latest") with 8-byte addresses: signature,
    # version, sizes of offsets and lengths, flags, then base, extension and end-of-file
    # addresses. Other files are left to h5py.
    if head[:8] != b"\x89HDF\r\n\x1a\n" or len(head) < 36 or head[8] not in (2, 3) or head[9] != 8:
        return
    base, _, end = struct.unpack_from("<QQQ", head, 12)
    size = os.path.getsize(path)
    if size < base + end:
        raise ValueError(
            f"batch file {path!r} is truncated ({size} of its {base + end} bytes): remove it "
            "from the input, or copy it again from where it was recorded"
        )


def _sample_batch(columns: dict[str, Any]) -> SampleBatch:
    if all(isinstance(v, np.ndarray) for v in columns.values()):
        return SampleBatch(columns)
    # Dict and tuple columns (observations of Dict/Tuple spaces) come back as they
    # were written; array columns go first so that ``count`` reads an array.
    batch = SampleBatch({k: v for k, v in columns.items() if isinstance(v, np.ndarray)})
    dict.update(batch, {k: v for k, v in columns.items() if not isinstance(v, np.ndarray)})
    return batch


class BatchReader:
    """Reads recorded batches: every batch in file order (iteration), or this
    worker's share of them, round and round (``next()``, for ``config["input"]``).

    Worker ``i`` of ``n`` sampling workers (``worker_index`` 1..n; index 0 with
    no remote workers reads everything) takes every n-th batch starting at
    batch ``i - 1``, so the workers together read each batch once per pass.
    Each pass lists the files again and sees batches committed since.

    Args:
        inputs: a directory, a file, or a list of files/directories.
        worker_index: the reading worker's index.
        num_workers: the number of remote workers.

    Example:
        >>> import tempfile
        >>> from hpcrl.io.batch_writer import BatchWriter
        >>> directory = tempfile.mkdtemp()
        >>> with BatchWriter(directory) as writer:
        ...     for i in range(3):
        ...         writer.write(SampleBatch({"obs": np.full((2, 1), i)}))
        >>> reader = BatchReader(directory)
        >>> [int(reader.next()["obs"][0, 0]) for _ in range(4)]
        [0, 1, 2, 0]
    """

    def __init__(
        self,
        inputs: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        worker_index: int = 0,
        num_workers: int = 0,
    ) -> None:
        self.inputs = inputs
        self.worker_index = worker_index
        self.num_workers = num_workers
        self.files = input_files(inputs)
        self._open: OrderedDict[str, BatchFile] = OrderedDict()
        self._entries: list[tuple[str, int]] = []
        self._position = 0
        self.passes = 0
        first = self._file(self.files[0])
        self.config = first.config
        self.batch_type = first.batch_type

    # -- metadata --------------------------------------------------------
    def spaces(self) -> dict[str, tuple[gym.Space, gym.Space]]:
        """Policy id -> (observation space, action space), from the first file that has them.

        Raises:
            ValueError: files disagree on a policy's spaces.
        """
        found: dict[str, tuple[gym.Space, gym.Space]] = {}
        origin: dict[str, str] = {}
        for path in self.files:
            for pid, spaces in self._file(path).spaces().items():
                if pid not in found:
                    found[pid], origin[pid] = spaces, path
                elif spaces != found[pid]:
                    raise ValueError(
                        f"input files disagree on the spaces of policy {pid!r}: {origin[pid]!r} "
                        f"has {found[pid]}, {path!r} has {spaces}; read them separately"
                    )
        return found

    def num_batches(self) -> int:
        """Batches committed in all files (as of their last refresh)."""
        return sum(len(self._file(path)) for path in self.files)

    # -- reading ---------------------------------------------------------
    def __iter__(self) -> Iterator[SampleBatch | MultiAgentBatch]:
        for path in self.files:
            batch_file = self._file(path)
            for number in range(len(batch_file)):
                yield batch_file.read(number)

    def next(self) -> SampleBatch | MultiAgentBatch:
        """The next batch of this worker's share, starting over after the last."""
        if self._position >= len(self._entries):
            self._start_pass()
        path, number = self._entries[self._position]
        self._position += 1
        return self._file(path).read(number)

    def _start_pass(self) -> None:
        if self._entries:  # not the first pass: look for new files and batches
            self.files = input_files(self.inputs)
            for batch_file in self._open.values():
                batch_file.refresh()
            self.passes += 1
        entries = [(path, n) for path in self.files for n in range(len(self._file(path)))]
        if not entries:
            raise ValueError(f"the input files {self.files} hold no committed batches")
        if self.num_workers > 0 and self.worker_index > 0:
            share = entries[self.worker_index - 1 :: self.num_workers]
            entries = share or [entries[(self.worker_index - 1) % len(entries)]]
        self._entries = entries
        self._position = 0

    def get_state(self) -> dict[str, Any]:
        """Where ``next()`` is: restoring it continues with the same batch, given the same files."""
        return {"position": self._position, "passes": self.passes, "started": bool(self._entries)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._entries = []
        if state["started"]:
            self._start_pass()
        self._position = int(state["position"])
        self.passes = int(state["passes"])

    def _file(self, path: str) -> BatchFile:
        batch_file = self._open.get(path)
        if batch_file is None:
            batch_file = self._open[path] = BatchFile(path)
            if len(self._open) > _MAX_OPEN_FILES:
                _, oldest = self._open.popitem(last=False)
                oldest.close()
        self._open.move_to_end(path)
        return batch_file

    def close(self) -> None:
        for batch_file in self._open.values():
            batch_file.close()
        self._open.clear()
