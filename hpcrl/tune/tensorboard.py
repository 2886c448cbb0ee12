"""A TensorBoard event-file writer for scalars, without TensorFlow or tensorboard.

An event file is a sequence of TFRecords (length, masked CRC32C of the length,
payload, masked CRC32C of the payload); each payload is an ``Event`` protocol
buffer. Only the few fields scalars need are encoded here.
"""

from __future__ import annotations

import os
import socket
import struct
import time

_CRC_TABLE: list[int] = []
for _i in range(256):
    _crc = _i
    for _ in range(8):
        _crc = (_crc >> 1) ^ 0x82F63B78 if _crc & 1 else _crc >> 1
    _CRC_TABLE.append(_crc)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def encode_event(
    wall_time: float,
    step: int,
    scalars: dict[str, float] | None = None,
    file_version: str | None = None,
) -> bytes:
    """An ``Event`` message: wall_time (1), step (2), file_version (3) or summary (5)."""
    message = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step)
    if file_version is not None:
        message += _length_delimited(3, file_version.encode())
    if scalars:
        values = b"".join(
            _length_delimited(
                1, _length_delimited(1, tag.encode()) + _field(2, 5) + struct.pack("<f", value)
            )
            for tag, value in scalars.items()
        )
        message += _length_delimited(5, values)
    return message


def frame_record(payload: bytes) -> bytes:
    header = struct.pack("<Q", len(payload))
    return (
        header
        + struct.pack("<I", _masked_crc(header))
        + payload
        + struct.pack("<I", _masked_crc(payload))
    )


class EventFileWriter:
    """Appends scalar summaries to ``events.out.tfevents.<time>.<host>`` in ``logdir``."""

    def __init__(self, logdir: str) -> None:
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        self._file.write(frame_record(encode_event(time.time(), 0, file_version="brain.Event:2")))
        self._file.flush()

    def add_scalars(self, scalars: dict[str, float], step: int) -> None:
        self._file.write(frame_record(encode_event(time.time(), step, scalars=scalars)))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_records(path: str) -> list[bytes]:
    """The payloads of a TFRecord file, with both checksums verified."""
    payloads = []
    with open(path, "rb") as f:
        while header := f.read(8):
            (length,) = struct.unpack("<Q", header)
            (crc,) = struct.unpack("<I", f.read(4))
            if crc != _masked_crc(header):
                raise ValueError(f"{path}: corrupt record length checksum")
            payload = f.read(length)
            (crc,) = struct.unpack("<I", f.read(4))
            if crc != _masked_crc(payload):
                raise ValueError(f"{path}: corrupt record checksum")
            payloads.append(payload)
    return payloads
