from __future__ import annotations

import msgpack
import pytest

from daemons.protocol.codec import CodecError, decode, detect, encode, salvage_token


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


# -- hostile payloads (issue 11): a clear 400 with the clientToken, never an exception ---------

def _deep_json(levels: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    inner = opener * levels + b"1" + closer * levels
    return b'{"clientToken":"deep","state":{"reported":{"a":' + inner + b"}}}"


@pytest.mark.parametrize("raw", [
    _deep_json(300),  # the field report: 300 nested arrays, 620 bytes
    _deep_json(600, b'{"a":', b"}"),  # 600 nested objects
    _deep_json(5000),  # beyond orjson's own limit
    b"\x82\xabclientToken\xa4deep\xa5state" + b"\x91" * 600 + b"\x01",  # MessagePack arrays
    b"\x82\xabclientToken\xa4deep\xa5state" + b"\x81\xa1a" * 600 + b"\x01",  # MessagePack maps
])
def test_deep_nesting_is_refused_without_recursion(raw):
    with pytest.raises(CodecError) as err:
        decode(raw)
    assert err.value.code == 400 and "nest" in err.value.message


def test_deep_nesting_keeps_the_client_token_when_it_could_be_read():
    with pytest.raises(CodecError) as err:
        decode(_deep_json(300))
    assert err.value.token == "deep"


@pytest.mark.parametrize("raw", [
    b'{"clientToken":"t","a":9223372036854775808}',  # int64 max + 1: orjson keeps it, we refuse
    b'{"clientToken":"t","a":-9223372036854775809}',  # orjson would round it to a float
    b'{"clientToken":"t","a":[1, 18446744073709551616]}',
    msgpack.packb({"clientToken": "t", "a": 2**64 - 1}),
    msgpack.packb({"clientToken": "t", "a": float("nan")}),
    msgpack.packb({"clientToken": "t", "a": [float("-inf")]}),
    b'{"clientToken":"t","a":1,"a":2}',  # duplicate keys: the last would silently win
    b'{"clientToken":"t","b":{"x":1,"x":1}}',
    b"\x83\xabclientToken\xa1t\xa1a\x01\xa1a\x02",
    msgpack.packb({"clientToken": "t", "a": b"bytes"}, use_bin_type=True),  # no JSON word for bin
    msgpack.packb({"clientToken": "t", "a": msgpack.ExtType(5, b"x")}),
    b'{"clientToken":"t","a":"\xff\xfe"}',  # invalid UTF-8
    b"\x82\xabclientToken\xa1t\xa1a\xa2\xff\xfe",
])
def test_values_the_store_cannot_keep_exactly_are_refused_with_the_token(raw):
    with pytest.raises(CodecError) as err:
        decode(raw)
    assert err.value.code == 400 and err.value.token == "t"


@pytest.mark.parametrize("raw", [
    b'{"a":9223372036854775807,"b":-9223372036854775808}',
    b'{"a":1e19,"b":-2.5e-300,"c":12345678901234567890.5}',  # floats stay floats
    b'{"a":"x:y","b":"\\"k\\":1","c":{"d":[{"e":1},{"e":2}]}}',  # colons in strings, same key in two objects
])
def test_edges_that_are_kept(raw):
    value, _ = decode(raw)
    assert value


def test_numbers_may_be_left_to_the_caller():
    value, _ = decode(msgpack.packb({"temp_c": float("nan"), "n": 2**64 - 1}), exact_numbers=False)
    assert value["n"] == 2**64 - 1


def test_the_token_of_a_payload_refused_before_decoding():
    assert salvage_token(b'{"clientToken":"big","x":"' + b"y" * 100_000 + b'"}') == "big"
    assert salvage_token(msgpack.packb({"clientToken": "big", "x": "y" * 100_000})) == "big"
    assert salvage_token(b'{"clientToken":' + b"[" * 5000) is None
    assert salvage_token(b"\x00garbage") is None


def test_a_number_past_double_range_is_refused_with_the_token():
    with pytest.raises(CodecError) as err:
        decode(b'{"clientToken":"t","a":' + b"9" * 400 + b"}")
    assert err.value.code == 400 and err.value.token == "t"
