"""`rtdp share`, `rtdp group` and `rtdp user` (beyond add) on a data dir, as an administrator runs them."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from rtdp.cli import main
from rtdp.models import Group, Membership, User


def run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--data-dir", str(data_dir)], catch_exceptions=False)


def test_share_add_list_remove(tmp_path: Path) -> None:
    run(tmp_path, "user", "add", "ep@nothing.com", "--password", "a-long-password")
    run(tmp_path, "user", "add", "ap@nothing.com", "--password", "a-long-password")
    run(tmp_path, "feed", "add", "lab", "--owner", "ep@nothing.com")
    Membership.create(user=User.get(User.email == "ap@nothing.com"), group=Group.create(name="team"))

    added = run(tmp_path, "share", "add", "lab", "--user", "AP@nothing.com")
    assert added.exit_code == 0 and added.output.endswith("user ap@nothing.com may read lab\n")
    user_share = added.output.split()[1].rstrip(":")
    assert run(tmp_path, "share", "add", "lab", "--group", "team", "--write").exit_code == 0
    listed = run(tmp_path, "share", "list", "lab").output.splitlines()
    assert [line.split("\t")[1:] for line in listed] == [["read", "user ap@nothing.com"], ["write", "group team"]]

    removed = run(tmp_path, "share", "remove", "lab", user_share)
    assert removed.output == f"removed share {user_share}: user ap@nothing.com no longer may read lab\n"
    assert len(run(tmp_path, "share", "list", "lab").output.splitlines()) == 1


def test_share_errors_are_messages_without_traceback(tmp_path: Path) -> None:
    run(tmp_path, "user", "add", "ep@nothing.com", "--password", "a-long-password")
    run(tmp_path, "feed", "add", "lab", "--owner", "ep@nothing.com")
    for args in (
        ("share", "add", "lab"),
        ("share", "add", "lab", "--user", "ep@nothing.com", "--group", "team"),
        ("share", "add", "lab", "--user", "nobody@x.org"),
        ("share", "add", "lab", "--user", "ep@nothing.com"),
        ("share", "add", "missing", "--group", "team"),
        ("share", "remove", "lab", "7"),
        ("share", "remove", "lab", "99999999999999999999999"),
        ("share", "list", "missing"),
    ):
        result = run(tmp_path, *args)
        assert result.exit_code != 0, args
        assert "Traceback" not in result.output and "Error" in result.output or "error:" in result.output, result.output


def test_group_add_list_members_remove(tmp_path: Path) -> None:
    run(tmp_path, "user", "add", "ap@nothing.com", "--password", "a-long-password")
    assert run(tmp_path, "group", "add", "lab", "--description", "the lab").output == "created group lab\n"
    assert run(tmp_path, "group", "member", "add", "lab", "AP@nothing.com").output == "group lab: ap@nothing.com\n"
    assert run(tmp_path, "group", "list").output == "lab\tap@nothing.com\n"
    assert run(tmp_path, "group", "member", "remove", "lab", "ap@nothing.com").output == "group lab: (no members)\n"
    assert run(tmp_path, "group", "member", "remove", "lab", "ap@nothing.com").exit_code == 1
    assert run(tmp_path, "group", "add", "lab").exit_code == 1  # exists
    assert run(tmp_path, "group", "remove", "lab").output == "removed group lab\n"
    assert run(tmp_path, "group", "list").output == ""


def test_the_cli_refuses_the_weak_passwords_the_form_refuses(tmp_path: Path) -> None:
    weak = run(tmp_path, "user", "add", "ep@nothing.com", "--password", "1234")
    assert weak.exit_code == 2 and "at least 8 characters" in weak.output
    assert run(tmp_path, "user", "add", "ep@nothing.com", "--password", "a-long-password").exit_code == 0
    assert "at least 8" in run(tmp_path, "user", "passwd", "ep@nothing.com", "--password", "short").output


def test_user_list_disable_enable_admin_passwd_remove(tmp_path: Path) -> None:
    run(tmp_path, "user", "add", "root@x.org", "--password", "a-long-password", "--admin")
    run(tmp_path, "user", "add", "ep@nothing.com", "--password", "a-long-password")
    run(tmp_path, "user", "add", "ap@nothing.com", "--password", "a-long-password")
    run(tmp_path, "feed", "add", "lab", "--owner", "ep@nothing.com")
    run(tmp_path, "feed", "add", "aps", "--owner", "ap@nothing.com")
    assert run(tmp_path, "user", "list").output.splitlines() == [
        "ap@nothing.com\tactive\t1 feeds", "ep@nothing.com\tactive\t1 feeds", "root@x.org\tadmin active\t0 feeds"
    ]
    assert run(tmp_path, "user", "disable", "ep@nothing.com").output == "disabled user ep@nothing.com\n"
    assert "ep@nothing.com\tdisabled" in run(tmp_path, "user", "list").output
    assert run(tmp_path, "user", "enable", "ep@nothing.com").exit_code == 0
    assert run(tmp_path, "user", "admin", "ep@nothing.com").output == "ep@nothing.com is an administrator\n"
    assert "no longer" in run(tmp_path, "user", "admin", "ep@nothing.com", "--revoke").output
    assert run(tmp_path, "user", "admin", "root@x.org", "--revoke").exit_code == 1  # the last admin
    assert run(tmp_path, "user", "passwd", "ep@nothing.com", "--password", "another-password").exit_code == 0

    given = run(tmp_path, "user", "remove", "ep@nothing.com", "--feeds-to", "root@x.org")
    assert given.output == "removed user ep@nothing.com\ngave 1 feeds to root@x.org: lab\n"
    # Without --feeds-to it asks first, and says what was deleted.
    assert run(tmp_path, "user", "remove", "ap@nothing.com").exit_code == 1  # no answer: aborted
    removed = run(tmp_path, "user", "remove", "ap@nothing.com", "--yes")
    assert removed.output == "removed user ap@nothing.com\ndeleted 1 feeds: aps\n"
    assert run(tmp_path, "user", "list").output.splitlines() == ["root@x.org\tadmin active\t1 feeds"]
