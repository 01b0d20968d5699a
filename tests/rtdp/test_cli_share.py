"""`rtdp share add|list|remove` and `rtdp group ...` through click on a data dir, as an administrator runs them."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from rtdp.cli import main
from rtdp.models import Group, Membership, User


def run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--data-dir", str(data_dir)], catch_exceptions=False)


def test_share_add_list_remove(tmp_path: Path) -> None:
    run(tmp_path, "user", "add", "ep@nothing.com", "--password", "1234")
    run(tmp_path, "user", "add", "ap@nothing.com", "--password", "1234")
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
    run(tmp_path, "user", "add", "ep@nothing.com", "--password", "1234")
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
    run(tmp_path, "user", "add", "ap@nothing.com", "--password", "1234")
    assert run(tmp_path, "group", "add", "lab", "--description", "the lab").output == "created group lab\n"
    assert run(tmp_path, "group", "member", "add", "lab", "AP@nothing.com").output == "group lab: ap@nothing.com\n"
    assert run(tmp_path, "group", "list").output == "lab\tap@nothing.com\n"
    assert run(tmp_path, "group", "member", "remove", "lab", "ap@nothing.com").output == "group lab: (no members)\n"
    assert run(tmp_path, "group", "member", "remove", "lab", "ap@nothing.com").exit_code == 1
    assert run(tmp_path, "group", "add", "lab").exit_code == 1  # exists
    assert run(tmp_path, "group", "remove", "lab").output == "removed group lab\n"
    assert run(tmp_path, "group", "list").output == ""
