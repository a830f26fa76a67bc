"""The engine stream format, without an engine."""

from __future__ import annotations

import struct

from harness.runtime import demux_stream


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def test_demux_joins_the_payloads_of_both_streams_in_order() -> None:
    raw = frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"") + frame(1, b"x" * 70000)
    assert demux_stream(raw) == b"out\nerr\n" + b"x" * 70000


def test_demux_of_nothing_and_of_a_cut_header() -> None:
    assert demux_stream(b"") == b""
    assert demux_stream(frame(1, b"ok") + b"\x01\x00") == b"ok"
