"""kill -9 of a process writing batches, at random moments: every batch whose write
returned reads back intact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import kill_writer_script  # beside this file, on sys.path like the other test helpers
import pytest

from hpcrl.io.batch_reader import BatchFile, BatchReader

SCRIPT = Path(kill_writer_script.__file__).resolve()


def kill_writers_at_random(directory: Path, kills: int, seed: int) -> dict[int, int]:
    """Start a writer, SIGKILL it after a random delay, ``kills`` times; returns
    pid -> number of batches the writer reported written."""
    rng = random.Random(seed)
    reported = {}
    for attempt in range(kills):
        compress = ("none", "gzip", "lzf")[attempt % 3]
        writer = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(directory), compress],
            stdout=subprocess.PIPE,
            text=True,
        )
        first = ""
        if attempt % 2:
            # Anywhere from start-up (file creation, the first batch) into the appends.
            time.sleep(rng.uniform(0.05, 0.8))
        else:
            # Among the appends, however slow the start-up on a busy machine.
            first = writer.stdout.readline()
            time.sleep(rng.uniform(0.0, 0.3))
        os.kill(writer.pid, signal.SIGKILL)
        out, _ = writer.communicate(timeout=60)
        assert writer.returncode == -signal.SIGKILL
        reported[writer.pid] = len((first + out).split())
    return reported


def check_every_reported_batch(directory: Path, reported: dict[int, int]) -> int:
    found = {}
    for path in sorted(directory.glob("*.h5")):
        batch_file = BatchFile(str(path))
        pid = int(batch_file.file.attrs["pid"])
        for number in range(len(batch_file)):
            got = batch_file.read(number)
            expected = kill_writer_script.numbered_batch(number)
            assert got.count == expected.count, (path, number)
            for key in ("obs", "actions", "terminateds"):
                assert (got[key] == expected[key]).all(), (path, number, key)
            assert list(got["infos"]) == list(expected["infos"]), (path, number)
        found[pid] = len(batch_file)
        batch_file.close()
    for pid, count in reported.items():
        # The kill may land after a commit and before its number is printed: more is fine.
        assert found.get(pid, 0) >= count, (pid, found.get(pid, 0), count)
    return sum(found.values())


@pytest.mark.parametrize("kills, seed", [(6, 0)])
def test_kill_9_at_random_moments_keeps_every_written_batch(tmp_path, kills, seed):
    reported = kill_writers_at_random(tmp_path, kills, seed)
    assert sum(reported.values()) > 0, "no writer got a batch out: the kills came too early"
    total = check_every_reported_batch(tmp_path, reported)
    assert total >= sum(reported.values())
    # The files of killed writers are still marked open for writing; SWMR readers
    # (BatchReader, or h5py with swmr=True) read them.
    reader = BatchReader(tmp_path)
    assert reader.num_batches() == total
    assert all(name.endswith(".h5") for name in reader.files)
    reader.close()
    with h5py.File(reader.files[0], "r", swmr=True) as f:
        assert f["index"].shape[0] >= 1


@pytest.mark.slow
def test_kill_9_many_times(tmp_path):
    reported = kill_writers_at_random(tmp_path, 150, seed=1)
    check_every_reported_batch(tmp_path, reported)
