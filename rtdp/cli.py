"""The `rtdp` command: a thin layer that parses options into Settings and calls the Python API."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

import click

from rtdp.emulation import SOURCES
from rtdp.errors import RtdpError
from rtdp.settings import SPECS, Settings, Spec, default_text, env_name

F = TypeVar("F", bound=Callable[..., Any])


def _settings(**options: Any) -> Settings:
    try:
        return Settings.build(**options)
    except RtdpError as exc:
        raise click.UsageError(exc.message) from None


def _fail_cleanly(func: F) -> F:
    """Our own errors end the command with their one-line message, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RtdpError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(2 if exc.status == 400 else 1)

    return wrapper  # type: ignore[return-value]


def settings_options(command: str) -> Callable[[F], F]:
    """Every option of `command` that is a setting, built from the settings table (rtdp.settings.SPECS).

    Options default to None, so a setting not given falls to its RTDP_ variable, then to its default."""

    def decorate(func: F) -> F:
        for name, spec in reversed(SPECS.items()):
            if spec.flag is not None and spec.takes(command):
                func = _option(name, spec)(func)
        return func

    return decorate


# How --help shows a setting's value, by its type (click would say TEXT: Settings converts the text).
METAVARS = {
    "int": "N", "float": "NUMBER", "HostPort": "HOST:PORT", "HostPort | None": "HOST:PORT", "BrokerURL | None": "URL"
}


def _option(name: str, spec: Spec) -> Callable[[F], F]:
    kind = str(Settings.__dataclass_fields__[name].type)
    flag = spec.flag
    assert flag is not None
    extra: dict[str, Any] = {"metavar": spec.metavar or METAVARS.get(kind)}
    if kind == "bool":
        flag = f"{flag}/--no-{flag.removeprefix('--')}"
        extra = {}
    elif spec.choices:
        extra["type"] = click.Choice(spec.choices, case_sensitive=False)
        extra["metavar"] = None
    elif kind == "Path":
        extra["type"] = click.Path(file_okay=False, path_type=Path)
    return click.option(flag, name, default=None, help=f"{spec.help} [default: {default_text(name)}]", **extra)


ENV_ONLY = "; ".join(f"{env_name(name)}: {spec.help}" for name, spec in SPECS.items() if spec.flag is None)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Every setting can also be given as an RTDP_ environment variable (--max-payload as RTDP_MAX_PAYLOAD); "
    f"these only so: {ENV_ONLY} All settings: docs/settings.md.",
)
@click.version_option(package_name="rtdp")
def main() -> None:
    """Real-time data processor: MQTT or HTTP in, stored safely, live graphs out."""


@main.command()
@settings_options("serve")
@_fail_cleanly
def serve(**options: Any) -> None:
    """Run broker, bridge and viewer together (embedded broker and SQLite: no configuration)."""
    from rtdp.serve import serve as run_serve

    run_serve(_settings(**options))


@main.command()
@settings_options("broker")
@_fail_cleanly
def broker(**options: Any) -> None:
    """Run the embedded MQTT broker alone."""
    from broker.server import run

    run(_settings(**options))


@main.command()
@settings_options("bridge")
@_fail_cleanly
def bridge(**options: Any) -> None:
    """Run the bridge alone: subscribe, validate, store, acknowledge, republish."""
    from bridge.service import run

    run(_settings(**options))


@main.command()
@settings_options("viewer")
@_fail_cleanly
def viewer(**options: Any) -> None:
    """Run the web viewer alone (pages, API, SSE, HTTP ingestion)."""
    from viewer.app import run

    run(_settings(**options))


def _open(options: dict[str, Any]) -> Settings:
    from rtdp.database import open_database

    settings = _settings(**options)
    open_database(settings.database_url)
    return settings


@main.group()
def user() -> None:
    """Manage users."""


@user.command("add")
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="The user's password.")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@settings_options("user add")
@_fail_cleanly
def user_add(email: str, password: str, admin: bool, **options: Any) -> None:
    """Create a user (the password rule of the Register page applies)."""
    from rtdp.accounts import create_user
    from rtdp.credentials import check_new_password

    check_new_password(password)
    _open(options)
    created = create_user(email, password, admin=admin)
    click.echo(f"created user {created.email}{' (admin)' if admin else ''}")


@user.command("list")
@settings_options("user list")
@_fail_cleanly
def user_list(**options: Any) -> None:
    """List users: email, admin, active or disabled, feeds owned."""
    from rtdp.permissions import OPERATOR
    from rtdp.users import list_users

    _open(options)
    for view in list_users(OPERATOR):
        state = ("admin " if view.admin else "") + ("active" if view.active else "disabled")
        click.echo(f"{view.email}\t{state}\t{view.feeds} feeds")


@user.command("disable")
@click.argument("email")
@settings_options("user disable")
@_fail_cleanly
def user_disable(email: str, **options: Any) -> None:
    """Disable EMAIL: no login, no token, open connections end; nothing is deleted."""
    from rtdp.permissions import OPERATOR
    from rtdp.users import set_active

    _open(options)
    click.echo(f"disabled user {set_active(OPERATOR, email, False).email}")


@user.command("enable")
@click.argument("email")
@settings_options("user enable")
@_fail_cleanly
def user_enable(email: str, **options: Any) -> None:
    """Enable EMAIL again."""
    from rtdp.permissions import OPERATOR
    from rtdp.users import set_active

    _open(options)
    click.echo(f"enabled user {set_active(OPERATOR, email, True).email}")


@user.command("remove")
@click.argument("email")
@click.option("--feeds-to", metavar="EMAIL", help="Give the user's feeds to this user. [default: delete them]")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@settings_options("user remove")
@_fail_cleanly
def user_remove(email: str, feeds_to: str | None, yes: bool, **options: Any) -> None:
    """Remove EMAIL with their tokens and shares, and their feeds with all points unless --feeds-to."""
    from rtdp.permissions import OPERATOR
    from rtdp.users import remove_user

    if not yes and not feeds_to:
        click.confirm(f"Remove {email} and delete every feed they own, with all its points?", abort=True)
    _open(options)
    removal = remove_user(OPERATOR, email, feeds_to)
    click.echo(f"removed user {removal.email}")
    if removal.feeds_given:
        click.echo(f"gave {len(removal.feeds_given)} feeds to {removal.given_to}: {', '.join(removal.feeds_given)}")
    if removal.feeds_deleted:
        click.echo(f"deleted {len(removal.feeds_deleted)} feeds: {', '.join(removal.feeds_deleted)}")


@user.command("passwd")
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="The new password.")
@settings_options("user passwd")
@_fail_cleanly
def user_passwd(email: str, password: str, **options: Any) -> None:
    """Set EMAIL's password (the rule of the Register page applies); their sessions end."""
    from rtdp.credentials import check_new_password
    from rtdp.permissions import OPERATOR
    from rtdp.users import set_password

    check_new_password(password)
    _open(options)
    click.echo(f"new password for {set_password(OPERATOR, email, password).email}")


@user.command("admin")
@click.argument("email")
@click.option("--revoke", is_flag=True, help="Take the administrator's rights away instead.")
@settings_options("user admin")
@_fail_cleanly
def user_admin(email: str, revoke: bool, **options: Any) -> None:
    """Make EMAIL an administrator (or, with --revoke, no longer one)."""
    from rtdp.permissions import OPERATOR
    from rtdp.users import set_admin

    _open(options)
    view = set_admin(OPERATOR, email, not revoke)
    click.echo(f"{view.email} is {'an administrator' if view.admin else 'no longer an administrator'}")


@main.group()
def token() -> None:
    """Manage API and device tokens."""


@token.command("add")
@click.argument("email")
@click.option("--feed", help="Limit the token to this feed.")
@click.option("--read", "access", flag_value="read", help="Read only.")
@click.option("--write", "access", flag_value="write", help="Write (and read).")
@click.option("--name", default="", help="A label for the token.")
@click.option("--expires-days", type=click.IntRange(1, 3650), help="Stop working after N days. [default: never]")
@settings_options("token add")
@_fail_cleanly
def token_add(
    email: str, feed: str | None, access: str | None, name: str, expires_days: int | None, **options: Any
) -> None:
    """Create a token for EMAIL and print it (it is shown only this once)."""
    import time

    from rtdp.accounts import create_token, get_user
    from rtdp.permissions import Access
    from rtdp.store import get_feed

    _open(options)
    issued = create_token(
        get_user(email),
        feed=get_feed(feed) if feed else None,
        access=Access(access) if access else None,
        name=name,
        expires=time.time() + expires_days * 86400 if expires_days else None,
    )
    click.echo(issued.token)


@main.group()
def feed() -> None:
    """Manage feeds."""


@feed.command("add")
@click.argument("name")
@click.option("--owner", required=True, help="Email of the owner.")
@click.option("--x-cast", type=click.Choice(["datetime", "float", "int"]), default="datetime", show_default=True)
@click.option("--y-cast", type=click.Choice(["float", "int", "bool"]), default="float", show_default=True)
@click.option("--description", default="")
@click.option("--public", is_flag=True, help="Readable without login.")
@settings_options("feed add")
@_fail_cleanly
def feed_add(name: str, owner: str, x_cast: str, y_cast: str, description: str, public: bool, **options: Any) -> None:
    """Create a feed."""
    from rtdp.accounts import get_user
    from rtdp.store import create_feed

    _open(options)
    created = create_feed(name, get_user(owner), x_cast=x_cast, y_cast=y_cast, description=description, public=public)
    click.echo(f"created feed {created.name} (x {created.x_cast}, y {created.y_cast})")


@main.group()
def axis() -> None:
    """Manage axes."""


@axis.command("add")
@click.argument("feed_name", metavar="FEED")
@click.argument("name", metavar="AXIS")
@settings_options("axis add")
@_fail_cleanly
def axis_add(feed_name: str, name: str, **options: Any) -> None:
    """Create an axis in FEED."""
    from rtdp.store import create_axis, get_feed

    _open(options)
    created = create_axis(get_feed(feed_name), name)
    click.echo(f"created axis {feed_name}/{created.name}")


@main.group()
def share() -> None:
    """Share feeds with users and groups (the feed page and the API do the same)."""


@share.command("add")
@click.argument("feed_name", metavar="FEED")
@click.option("--user", "email", help="Share with this user (email).")
@click.option("--group", help="Share with this group (name).")
@click.option("--write", is_flag=True, help="Let them write too (add points and axes). [default: read only]")
@settings_options("share add")
@_fail_cleanly
def share_add(feed_name: str, email: str | None, group: str | None, write: bool, **options: Any) -> None:
    """Share FEED with a user or a group; again with the same one changes its access."""
    from rtdp.permissions import OPERATOR, Access
    from rtdp.sharing import add_share

    if (email is None) == (group is None):
        raise click.UsageError("give exactly one of --user EMAIL or --group NAME")
    _open(options)
    added = add_share(OPERATOR, feed_name, user=email, group=group, access=Access.WRITE if write else Access.READ)
    click.echo(f"share {added.id}: {added.grantee} may {added.access.value} {added.feed}")


@share.command("list")
@click.argument("feed_name", metavar="FEED")
@settings_options("share list")
@_fail_cleanly
def share_list(feed_name: str, **options: Any) -> None:
    """List FEED's shares: id, access, user or group."""
    from rtdp.permissions import OPERATOR
    from rtdp.sharing import list_shares

    _open(options)
    for view in list_shares(OPERATOR, feed_name):
        click.echo(f"{view.id}\t{view.access.value}\t{view.grantee}")


@share.command("remove")
@click.argument("feed_name", metavar="FEED")
@click.argument("share_id", metavar="ID", type=click.IntRange(min=1))
@settings_options("share remove")
@_fail_cleanly
def share_remove(feed_name: str, share_id: int, **options: Any) -> None:
    """Remove share ID (see `rtdp share list FEED`); open streams and subscriptions stop within a second."""
    from rtdp.permissions import OPERATOR
    from rtdp.sharing import remove_share

    _open(options)
    removed = remove_share(OPERATOR, feed_name, share_id)
    click.echo(f"removed share {removed.id}: {removed.grantee} no longer may {removed.access.value} {removed.feed}")


@main.group()
def alert() -> None:
    """Alert rules on axes (the /alerts page and /api/v1/alerts do the same)."""


@alert.command("add")
@click.argument("feed_name", metavar="FEED")
@click.argument("axis_name", metavar="AXIS")
@click.option("--name", required=True, help="What the rule is called.")
@click.option("--above", type=float, help="Fire when a value is above this.")
@click.option("--below", type=float, help="Fire when a value is below this.")
@click.option("--changes", is_flag=True, help="Fire when the value changes (bool and int feeds).")
@click.option("--to", "to_value", help="With --changes: only when it changes to this value.")
@click.option("--silent", type=float, metavar="SECONDS", help="Fire when no point arrived for this long.")
@click.option("--hysteresis", type=float, default=0.0, show_default=True, help="How far back a value must go to end.")
@click.option("--for", "for_s", type=float, default=0.0, show_default=True, help="Seconds the condition must hold.")
@click.option("--severity", type=click.Choice(["info", "warning", "critical"]), default="warning", show_default=True)
@click.option("--repeat-min", type=float, help="Run the actions again every this many minutes while firing.")
@click.option("--browser", is_flag=True, help="Notify open pages of the feed.")
@click.option("--publish", is_flag=True, help="Publish the alert on rtdp/alerts/FEED (MQTT).")
@click.option("--mqtt-topic", help="Also publish to this feeds/<feed>/<axis> topic (with --mqtt-payload).")
@click.option("--mqtt-payload", help="What to publish to --mqtt-topic [default: the alert's JSON].")
@click.option("--webhook", multiple=True, help="POST the alert's JSON here (repeatable).")
@click.option("--email", multiple=True, help="Send an e-mail here (repeatable; needs RTDP_SMTP_URL).")
@click.option("--disabled", is_flag=True, help="Make it switched off.")
@settings_options("alert add")
@_fail_cleanly
def alert_add(feed_name: str, axis_name: str, **options: Any) -> None:
    """Add an alert rule on FEED's AXIS (exactly one of --above, --below, --changes, --silent)."""
    from rtdp import alerts
    from rtdp.permissions import OPERATOR

    kinds = [k for k in ("above", "below", "silent") if options[k] is not None]
    kinds += ["changes"] if options["changes"] else []
    if len(kinds) != 1:
        raise click.UsageError("give exactly one of --above, --below, --changes or --silent")
    body = alerts.cli_body(feed_name, axis_name, kinds[0], options)
    settings = _open(options)
    rule = alerts.add_rule(OPERATOR, body, alerts.Checks(allow_private=settings.webhook_allow_private))
    click.echo(f"alert {rule.id}: {rule.name} ({rule.kind}) on {feed_name}/{axis_name}, secret {rule.secret}")


@alert.command("list")
@click.option("--feed", "feed_name", help="Only this feed's rules.")
@settings_options("alert list")
@_fail_cleanly
def alert_list(feed_name: str | None, **options: Any) -> None:
    """List alert rules: id, state, feed/axis, condition, severity, name."""
    from rtdp import alerts
    from rtdp.permissions import OPERATOR

    _open(options)
    for shown in alerts.rules_json(OPERATOR, alerts.list_rules(OPERATOR, feed_name)):
        click.echo("\t".join([str(shown["id"]), shown["state"] + ("" if shown["enabled"] else " (disabled)"),
                              f"{shown['feed']}/{shown['axis']}", alerts.condition(shown), shown["severity"],
                              shown["name"]]))


@alert.command("remove")
@click.argument("rule_id", metavar="ID", type=click.IntRange(min=1))
@settings_options("alert remove")
@_fail_cleanly
def alert_remove(rule_id: int, **options: Any) -> None:
    """Remove alert rule ID and its events."""
    from rtdp import alerts
    from rtdp.permissions import OPERATOR

    _open(options)
    alerts.remove_rule(OPERATOR, rule_id)
    click.echo(f"removed alert {rule_id}")


@main.group()
def group() -> None:
    """Manage groups of users (share a feed with a group: `rtdp share add FEED --group NAME`)."""


@group.command("add")
@click.argument("name")
@click.option("--description", default="", help="What the group is for.")
@settings_options("group add")
@_fail_cleanly
def group_add(name: str, description: str, **options: Any) -> None:
    """Create group NAME."""
    from rtdp.groups import create_group
    from rtdp.permissions import OPERATOR

    _open(options)
    click.echo(f"created group {create_group(OPERATOR, name, description).name}")


@group.command("list")
@settings_options("group list")
@_fail_cleanly
def group_list(**options: Any) -> None:
    """List groups and their members."""
    from rtdp.groups import list_groups
    from rtdp.permissions import OPERATOR

    _open(options)
    for view in list_groups(OPERATOR):
        click.echo(f"{view.name}\t{', '.join(view.members or [])}")


@group.command("remove")
@click.argument("name")
@settings_options("group remove")
@_fail_cleanly
def group_remove(name: str, **options: Any) -> None:
    """Remove group NAME, its memberships and the shares made to it."""
    from rtdp.groups import remove_group
    from rtdp.permissions import OPERATOR

    _open(options)
    remove_group(OPERATOR, name)
    click.echo(f"removed group {name}")


@group.group("member")
def group_member() -> None:
    """Add users to groups and remove them."""


@group_member.command("add")
@click.argument("name", metavar="GROUP")
@click.argument("email")
@settings_options("group member add")
@_fail_cleanly
def group_member_add(name: str, email: str, **options: Any) -> None:
    """Add the user EMAIL to GROUP."""
    from rtdp.groups import add_member
    from rtdp.permissions import OPERATOR

    _open(options)
    view = add_member(OPERATOR, name, email)
    click.echo(f"group {view.name}: {', '.join(view.members or [])}")


@group_member.command("remove")
@click.argument("name", metavar="GROUP")
@click.argument("email")
@settings_options("group member remove")
@_fail_cleanly
def group_member_remove(name: str, email: str, **options: Any) -> None:
    """Remove the user EMAIL from GROUP (they lose its shares at once)."""
    from rtdp.groups import remove_member
    from rtdp.permissions import OPERATOR

    _open(options)
    view = remove_member(OPERATOR, name, email)
    click.echo(f"group {view.name}: {', '.join(view.members or []) or '(no members)'}")


@main.command()
@click.argument("feed_name", metavar="FEED")
@click.option("--axis", "axis_names", multiple=True, help="Only this axis (repeatable). [default: all]")
@click.option("--since", help="From this x (ISO 8601 or epoch seconds for datetime feeds).")
@click.option("--until", help="Up to this x.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.File("w"), default="-", help="File to write. [default: stdout]")
@settings_options("export")
@_fail_cleanly
def export(
    feed_name: str,
    axis_names: tuple[str, ...],
    since: str | None,
    until: str | None,
    fmt: str,
    output: Any,
    **options: Any,
) -> None:
    """Export a feed's points as CSV (header x,y; axis,x,y for several axes) or JSON."""
    from rtdp import export
    from rtdp.casts import XCast, YCast, cast_x
    from rtdp.codec import Casts
    from rtdp.models import Axis
    from rtdp.store import get_axis, get_feed, iter_export

    settings = _open(options)
    feed_row = get_feed(feed_name)
    x_cast, y_cast = XCast(feed_row.x_cast), YCast(feed_row.y_cast)
    axes = (
        [get_axis(feed_row, name) for name in axis_names]
        if axis_names
        else list(Axis.select().where(Axis.feed == feed_row.id).order_by(Axis.name))
    )
    low = cast_x(since, x_cast, settings.tz) if since else None
    high = cast_x(until, x_cast, settings.tz) if until else None
    several = len(axes) > 1
    casts = Casts(x_cast, y_cast)
    # Axis by axis, so each is streamed without loading the feed (rows come ordered by axis, then x).
    by_axis = groupby(iter_export(feed_row, axes, low, high), key=itemgetter(0))
    units = {axis.name: axis.unit for axis in axes}
    if fmt == "csv":
        output.write(export.csv_header(several))
        for name, rows in by_axis:
            output.write(export.csv_lines(name, ((x, y) for _, x, y in rows), casts, several))
    else:
        output.write("[")
        first = True
        for name, rows in by_axis:
            points = export.json_points(name, ((x, y) for _, x, y in rows), casts, units[name])
            output.write(("" if first else ",") + ",".join(points))
            first = False
        output.write("]\n")


@main.command(help=f"Run emulated devices: {', '.join(SOURCES)} (all by default).")
@click.argument("sources", nargs=-1)
@click.option("--via", type=click.Choice(["mqtt", "http"]), default="mqtt", show_default=True, help="How to publish.")
@click.option("--owner", help="Email of the emulated feeds' owner. [default: the first admin]")
@click.option("--token", help="Publish with this token. [default: a write token created for the owner]")
@click.option("--url", "http_url", help="Web address for --via http. [default: http://<--http>]")
@click.option("--enable", "enable", multiple=True, metavar="SOURCE", help="Switch SOURCE on (live) and exit.")
@click.option("--disable", "disable", multiple=True, metavar="SOURCE", help="Switch SOURCE off (live) and exit.")
@click.option("--list", "list_sources", is_flag=True, help="Show each source's switch and position, then exit.")
@settings_options("emulate")
@_fail_cleanly
def emulate(
    sources: tuple[str, ...],
    via: str,
    owner: str | None,
    token: str | None,
    http_url: str | None,
    enable: tuple[str, ...],
    disable: tuple[str, ...],
    list_sources: bool,
    **options: Any,
) -> None:
    from emulator import available_sources, run, set_enabled, statuses
    from rtdp.logs import configure_logging
    from rtdp.serve import emulator_owner

    settings = _open(options)
    if enable or disable or list_sources:
        for name in enable:
            set_enabled(name, True)
        for name in disable:
            set_enabled(name, False)
        for status in statuses():
            click.echo(f"{status.source:12} {'on ' if status.enabled else 'off'} {json.dumps(status.state)}")
        return
    configure_logging(settings.log_level)
    click.echo(f"emulating {', '.join(sources or available_sources())} via {via}; Ctrl-C to stop")
    run(
        settings,
        sources,
        "http" if via == "http" else "mqtt",
        owner_email=owner or emulator_owner(),
        token=token,
        http_url=http_url,
    )


@main.command("mosquitto-files")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for passwd and acl. [default: DATA_DIR/mosquitto]",
)
@settings_options("mosquitto-files")
@_fail_cleanly
def mosquitto_files(out: Path | None, **options: Any) -> None:
    """Write an external Mosquitto's password and ACL files from rtdp's tokens and permissions.

    Devices log in with username = the token's prefix (first 12 characters) and password = the token.
    Run again after changing users, tokens, feeds or shares, then reload Mosquitto (SIGHUP).
    """
    from rtdp.mosquitto import write_mosquitto_files

    settings = _open(options)
    files = write_mosquitto_files(settings, out)
    click.echo(f"wrote {files.passwd} ({files.users} users, {files.tokens} tokens) and {files.acl}")
    if files.skipped:
        click.echo(f"note: {files.skipped} active token(s) left out (made before broker hashes, or a prefix clash)")


@main.command()
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@click.option("--feed", "feed_names", multiple=True, metavar="FEED", help="Only this feed (repeatable). [default: all]")
@settings_options("purge")
@_fail_cleanly
def purge(dry_run: bool, feed_names: tuple[str, ...], **options: Any) -> None:
    """Delete points beyond each feed's retention (days and/or points per axis) now.

    The bridge also does this every RTDP_RETENTION_INTERVAL seconds (default 600; 0 turns it off).
    """
    import time

    from rtdp.retention import purge as run_purge

    _open(options)
    report = run_purge(time.time(), dry_run=dry_run, feeds=feed_names or None)
    verb = "would remove" if dry_run else "removed"
    for axis_purge in report.axes:
        click.echo(f"{axis_purge.feed}/{axis_purge.axis}: {verb} {axis_purge.removed} points")
    click.echo(f"{verb} {report.removed} points from {len(report.axes)} axes")


@main.command("import")
@click.argument("feed_name", metavar="FEED")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--axis",
    "axis_name",
    help="Axis of an x,y file, created if missing [default: the feed's only axis]; in an axis,x,y file, only this one.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar (on a terminal).")
@settings_options("import")
@_fail_cleanly
def import_(feed_name: str, file: Path, axis_name: str | None, progress: bool, **options: Any) -> None:
    """Import a CSV file of points into FEED (header x,y, or axis,x,y as `rtdp export` writes).

    An offline administrative write of history (the bridge stays the only live writer): lines go
    through the feed's casts and are stored in batches; a line with the same axis and x as a stored
    point replaces it. Bad lines are reported with their line numbers and the rest is imported.
    Interrupted? Run the same command again: it continues after the last committed batch.
    Exits 1 when every line was rejected.
    """
    from rtdp.importer import import_csv

    settings = _open(options)
    report = import_csv(feed_name, file, axis=axis_name, settings=settings, progress=progress)
    if report.resumed_after:
        click.echo(f"resumed after line {report.resumed_after}")
    for name in report.created_axes:
        click.echo(f"created axis {feed_name}/{name}")
    click.echo(f"imported {report.imported} points into {feed_name} in {report.seconds:.1f}s")
    if report.skipped:
        click.echo(f"skipped {report.skipped} lines of other axes")
    if report.rejected:
        click.echo(f"rejected {report.rejected} lines:", err=True)
        for rejected in report.rejections:
            click.echo(f"  line {rejected.line}: {rejected.reason}", err=True)
        if report.rejected > len(report.rejections):
            click.echo(f"  ... and {report.rejected - len(report.rejections)} more", err=True)
    sys.exit(report.exit_status)
