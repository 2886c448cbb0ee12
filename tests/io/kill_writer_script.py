"""Writes numbered batches until killed, printing each number once its write returned.

Usage: python kill_writer_script.py DIR COMPRESS   (COMPRESS: none, gzip, lzf)
"""

from __future__ import annotations

import sys

import numpy as np

from hpcrl.io.batch_writer import BatchWriter
from hpcrl.policy.sample_batch import SampleBatch


def numbered_batch(number: int) -> SampleBatch:
    """Batch ``number``: its size and every value follow from the number."""
    rows = 40 + number % 17
    infos = np.empty(rows, dtype=object)
    infos[:] = [{"batch": number, "row": i} for i in range(rows)]
    return SampleBatch(
        {
            "obs": np.full((rows, 8, 8), number, dtype=np.float32),
            "actions": np.arange(rows, dtype=np.int64) + number,
            "terminateds": (np.arange(rows) + number) % 5 == 0,
            "infos": infos,
        }
    )


def main() -> None:
    directory, compress = sys.argv[1], sys.argv[2]
    with BatchWriter(
        directory, worker_index=1, compress=None if compress == "none" else compress
    ) as writer:
        number = 0
        while True:
            writer.write(numbered_batch(number))
            print(number, flush=True)
            number += 1


if __name__ == "__main__":
    main()
