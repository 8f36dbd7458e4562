"""daemons.protocol.acl (mosquitto acl_file semantics) and daemons.protocol.passwd ($7$ hashes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from daemons.protocol.acl import AclError, filter_within, filters_overlap, load_acl, parse_acl, topic_matches
from daemons.protocol.passwd import PasswdError, hash_password, read_passwd, verify_password, write_passwd
from tests.support import need


@pytest.mark.parametrize(("inner", "outer", "within"), [
    ("fleet/a/#", "fleet/a/#", True), ("fleet/a/x", "fleet/a/#", True), ("fleet/a", "fleet/a/#", True),
    ("fleet/+/x", "fleet/a/#", False), ("#", "fleet/#", False), ("fleet/+/x", "fleet/+/+", True),
    ("fleet/a/#", "fleet/+/+", False), ("fleet/a/b/c", "fleet/+/b", False),
])
def test_filter_within(inner: str, outer: str, within: bool) -> None:
    assert filter_within(inner, outer) is within


def test_matching_and_overlap() -> None:
    assert topic_matches("fleet/a", "fleet/a/#") and not topic_matches("$SYS/x", "#")
    assert filters_overlap("fleet/+/x", "fleet/a/#") and not filters_overlap("fleet/a/x", "fleet/b/+")


def test_shipped_acl_rules() -> None:
    acl = load_acl()
    assert acl.is_account("operator") and not acl.is_account("dev-1")
    assert acl.may_write("dev-1", "c", "fleet/dev-1/shadow/update")
    assert not acl.may_write("dev-1", "c", "fleet/dev-1/shadow/update/accepted")
    # A pattern never applies to a name with wildcards or a slash (mosquitto does the same).
    assert not acl.may_read("+", "c", "fleet/+/status") and not acl.may_subscribe("a/b", "c", "fleet/a/b/#")
    renamed = acl.with_prefixes("p1", "o1")
    assert renamed.may_write("dev-1", "c", "p1/dev-1/heartbeat") and renamed.may_read("operator", "c", "o1/x")


def test_deny_wins_and_bad_lines_are_refused() -> None:
    acl = parse_acl("user u\ntopic read a/#\ntopic deny a/secret\n")
    assert acl.may_read("u", "c", "a/b") and not acl.may_read("u", "c", "a/secret")
    assert not acl.may_subscribe("u", "c", "a/#")
    with pytest.raises(AclError, match=":1:"):
        parse_acl("topic read a/#\n")
    with pytest.raises(AclError):
        parse_acl("user u\nallow a\n")


def test_hashes_match_mosquitto_passwd(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    subprocess.run([need("mosquitto_passwd"), "-c", "-b", str(theirs), "alice", "s3cret"], check=True)
    stored = read_passwd(theirs)["alice"]
    assert verify_password("s3cret", stored) and not verify_password("s3cre", stored)
    ours = hash_password("s3cret", salt=bytes(12))
    assert ours.startswith("$7$101$") and verify_password("s3cret", ours)
    assert not verify_password("x", "$6$abc$def") and not verify_password("x", "$7$101$!!$!!")


def test_password_file_is_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    assert write_passwd(path, [("a", "1"), ("b", "2")]) == 2
    assert path.stat().st_mode & 0o077 == 0 and set(read_passwd(path)) == {"a", "b"}
    with pytest.raises(PasswdError):
        write_passwd(path, [("a:b", "1")])
    path.write_text("garbage line\n")
    with pytest.raises(PasswdError, match="not shown"):
        read_passwd(path)
