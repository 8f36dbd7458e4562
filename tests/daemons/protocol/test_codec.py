from __future__ import annotations

import msgpack
import pytest

from daemons.protocol.codec import CodecError, decode, detect, encode


def test_detect_from_first_byte():
    assert detect(b'{"a":1}') == "json" and detect(b' \n{"a":1}') == "json"
    assert detect(msgpack.packb({"a": 1})) == "msgpack"
    assert detect(b"\xde\x00\x00") == "msgpack"
    assert detect(b"[1]") is None and detect(b"") is None


def test_round_trip_both_encodings():
    value = {"a": [1, 2.5, "é"], "b": {"c": None}}
    for enc in ("json", "msgpack"):
        assert decode(encode(value, enc)) == (value, enc)


@pytest.mark.parametrize(("raw", "code"), [(b"{", 400), (b"\x81\xa1a", 400), (b"\x93\x01\x02\x03", 415),
                                           (b"", 400), (b"{\"a\": NaN}", 400)])
def test_bad_payloads(raw, code):
    with pytest.raises(CodecError) as err:
        decode(raw)
    assert err.value.code == code


def test_empty_payload_may_count_as_empty_object():
    assert decode(b"", empty_as={}) == ({}, "json")
