"""A text chunk's bytes are read into memory its thread keeps (`sources.read_buffer`).

What a user relies on: every read gives exactly the bytes of its range, whatever the ranges before it; bytes a
caller keeps never change when the thread reads the next range; a range past the end gives what the file holds.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from batchnb.sources import read_buffer
from batchnb.sources.read_buffer import read_range


@pytest.fixture
def blob(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("kept_max", [read_buffer.KEPT_MAX, 50_000])  # kept in the buffer / read on their own
def test_each_range_is_exactly_its_bytes_and_kept_bytes_never_change(blob, monkeypatch, kept_max):
    monkeypatch.setattr(read_buffer, "KEPT_MAX", kept_max)
    path, data = blob
    ranges = [(0, 100_000), (5, 90_000), (1_000, 120_000), (250_000, 100_000), (7, 0), (299_999, 1), (10, 99_000)]
    kept = []
    with open(path, "rb") as f:
        for start, size in ranges:
            got = read_range(f, start, size)
            assert got == data[start : start + size]  # the last but one range ends past the file: what it holds
            kept.append((got, bytes(got)))
    assert all(got == copy for got, copy in kept)  # the next reads did not write into bytes handed out


def test_threads_read_into_their_own_buffers(blob):
    path, data = blob
    failures: list[tuple[int, int]] = []

    def reader(offset: int) -> None:
        with open(path, "rb") as f:
            for k in range(200):
                start, size = (offset + 997 * k) % 200_000, 50_000 + (k * 131) % 40_000
                if read_range(f, start, size) != data[start : start + size]:
                    failures.append((start, size))

    threads = [threading.Thread(target=reader, args=(i * 7_919,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
