"""The management commands, run through click on a data dir as a user would (CliRunner, real SQLite)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from rtdp.cli import main
from rtdp.database import open_database
from rtdp.models import Token, User
from rtdp.settings import SPECS, Settings, env_name, reference


def run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--data-dir", str(data_dir)], catch_exceptions=False)


def test_users_tokens_feeds_axes_and_export(tmp_path: Path) -> None:
    assert run(tmp_path, "user", "add", "Ep@Nothing.com", "--password", "a-long-password", "--admin").output.startswith(
        "created user ep@nothing.com (admin)"
    )
    assert run(tmp_path, "feed", "add", "lab", "--owner", "ep@nothing.com", "--y-cast", "int").exit_code == 0
    assert run(tmp_path, "axis", "add", "lab", "temp").output.strip() == "created axis lab/temp"
    token = run(tmp_path, "token", "add", "ep@nothing.com", "--feed", "lab", "--write").output.strip()
    assert token.startswith("rtdp_")
    open_database(f"sqlite:///{tmp_path / 'rtdp.sqlite3'}")
    row = Token.get()
    assert row.access == "write" and row.feed.name == "lab" and token not in row.token_hash
    assert User.get().password_hash.startswith("$argon2")

    lines = tmp_path / "lab.csv"
    lines.write_text("x,y\n2026-11-27T10:00:00Z,1\n2026-11-27T10:00:01Z,2\n")
    assert run(tmp_path, "import", "lab", str(lines), "--axis", "temp", "--no-progress").exit_code == 0
    csv = run(tmp_path, "export", "lab").output
    assert csv == "x,y\n2026-11-27T10:00:00Z,1\n2026-11-27T10:00:01Z,2\n"
    exported = json.loads(run(tmp_path, "export", "lab", "--format", "json").output)
    assert exported == [
        {"axis": "temp", "x": "2026-11-27T10:00:00Z", "y": 1},
        {"axis": "temp", "x": "2026-11-27T10:00:01Z", "y": 2},
    ]
    # Several axes: an axis column first, axis by axis (the same format as the API's export).
    assert run(tmp_path, "axis", "add", "lab", "a,b").exit_code != 0  # a comma is not a name character
    assert run(tmp_path, "axis", "add", "lab", "rh").exit_code == 0
    lines.write_text("x,y\n2026-11-27T10:00:00Z,40\n")
    assert run(tmp_path, "import", "lab", str(lines), "--axis", "rh", "--no-progress").exit_code == 0
    assert run(tmp_path, "export", "lab").output == (
        "axis,x,y\nrh,2026-11-27T10:00:00Z,40\ntemp,2026-11-27T10:00:00Z,1\ntemp,2026-11-27T10:00:01Z,2\n"
    )


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    run(tmp_path, "user", "add", "ep@nothing.com", "--password", "a-long-password")
    for args in (
        ("token", "add", "ep@nothing.com", "--feed", "missing"),
        ("feed", "add", "bad/name", "--owner", "ep@nothing.com"),
        ("user", "add", "ep@nothing.com", "--password", "x"),
        ("axis", "add", "missing", "a"),
    ):
        result = run(tmp_path, *args)
        assert result.exit_code != 0, args
        assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
        assert "Traceback" not in result.output


def test_emulator_switches_from_the_command_line(tmp_path: Path) -> None:
    result = run(tmp_path, "emulate", "--disable", "door", "--disable", "x10")
    assert result.exit_code == 0, result.output
    states = {line.split()[0]: line.split()[1] for line in result.output.splitlines()}
    assert states["door"] == "off" and states["x10"] == "off" and states["sine"] == "on"
    result = run(tmp_path, "emulate", "--enable", "door")
    states = {line.split()[0]: line.split()[1] for line in result.output.splitlines()}
    assert states["door"] == "on" and states["x10"] == "off"
    unknown = run(tmp_path, "emulate", "--enable", "toaster")
    assert unknown.exit_code != 0 and unknown.output.startswith("error: ")


ROOT = Path(__file__).resolve().parents[2]
def _leaves(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    # Every command that runs, at any depth (`rtdp group member add`).
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            found += _leaves(cmd, (*path, name))
        else:
            found.append(((*path, name), cmd))
    return found


COMMANDS = {" ".join(path): command for path, command in _leaves(main)}


def test_the_settings_reference_is_generated_from_the_table() -> None:
    assert (ROOT / "docs" / "settings.md").read_text() == reference(), "run scripts/docs"


def test_every_setting_has_help_and_a_flag_or_its_variable_in_the_help() -> None:
    assert list(SPECS) == [spec_field.name for spec_field in dataclasses.fields(Settings)], (
        "declare every Settings field with setting(...)"
    )
    top = CliRunner().invoke(main, ["--help"], terminal_width=1000).output
    for name, spec in SPECS.items():
        assert spec.help.endswith((".", ")")), name
        assert spec.commands, name
        if spec.flag is None:
            assert env_name(name) in top, name
        else:
            assert any(spec.takes(command) for command in COMMANDS), name


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_takes_exactly_the_settings_the_table_gives_it(command: str) -> None:
    options = {param.name for param in COMMANDS[command].params if isinstance(param, click.Option)}
    wanted = {name for name, spec in SPECS.items() if spec.flag is not None and spec.takes(command)}
    assert wanted <= options
    assert not (options - wanted) & set(SPECS)
    assert {"data_dir", "db_url"} <= wanted


def test_an_option_from_the_table_reaches_the_settings(tmp_path: Path) -> None:
    result = run(tmp_path, "export", "lab", "--timezone", "Mars/Olympus")
    assert result.exit_code == 2 and "--timezone: unknown time zone 'Mars/Olympus'" in result.output
    assert "Error: " in run(tmp_path, "purge", "--timezone", "UTC").output  # purge does not take it
