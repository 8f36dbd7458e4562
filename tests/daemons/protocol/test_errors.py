"""One family for refused requests, one helper for clientToken, one place for key settings."""

from __future__ import annotations

import pytest

from daemons.protocol.codec import CodecError, decode
from daemons.protocol.errors import ConfigError, Rejected
from daemons.protocol.keys import derive, setting_key
from daemons.protocol.messages import error_body, with_client_token
from daemons.protocol.selector import SelectorError, parse_selector
from otaplanner.rollout import RolloutError
from shadowsync.document import ShadowError


@pytest.mark.parametrize("cls", [CodecError, ShadowError, RolloutError])
def test_every_refusal_is_rejected_with_its_code(cls: type[Rejected]) -> None:
    exc = cls(409, "conflict")
    assert isinstance(exc, Rejected) and isinstance(exc, ValueError)
    assert (exc.code, exc.message, str(exc)) == (409, "conflict", "conflict")


def test_codec_and_selector_raise_members_of_the_family() -> None:
    with pytest.raises(Rejected) as codec:
        decode(b"\x01")
    assert isinstance(codec.value, CodecError) and codec.value.code == 415
    with pytest.raises(Rejected) as selector:
        parse_selector({"colour": "red"})
    assert isinstance(selector.value, SelectorError) and selector.value.code == 400
    assert "colour" in selector.value.message


def test_client_token_goes_back_only_when_the_request_had_one() -> None:
    assert with_client_token({"a": 1}, "t1") == {"a": 1, "clientToken": "t1"}
    assert with_client_token({"a": 1}, None) == {"a": 1}
    expected = {"code": 404, "message": "no", "timestamp": 5, "clientToken": "t2"}
    assert error_body(404, "no", "t2", 5) == expected


def test_a_bad_key_setting_names_the_variable_never_the_key() -> None:
    assert setting_key("ota_master_key", None) is None
    assert setting_key("ota_master_key", "ab" * 16) == bytes.fromhex("ab" * 16)
    for value in ("zz" * 16, "abcd"):
        with pytest.raises(ConfigError, match=r"^FLEET_OTA_MASTER_KEY \(ota_master_key\): ") as exc:
            setting_key("ota_master_key", value)
        assert value not in str(exc.value)


def test_derivations_differ_by_use() -> None:
    master = bytes(range(32))
    assert derive(master, b"a") != derive(master, b"b")
    assert len(derive(master, b"a", 24)) == 24
