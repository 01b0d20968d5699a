"""The server-rendered pages: routes, middleware (session, CSRF via forms) and HTML error pages.

create_app adds them as:

    Starlette(routes=[*api_routes, *page_routes(settings)],
              middleware=[*page_middleware(settings), ...],
              exception_handlers=viewer.errors.exception_handlers(page_errors(settings)))  # non-/api paths
"""

from __future__ import annotations

from collections.abc import Callable

from jinja2 import Environment
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rtdp.settings import Settings
from viewer.errors import ErrorPage
from viewer.pages import accounts, admin, alerts, charts, dashboards, feeds, groups, legacy, sharing, tools, users
from viewer.pages.render import STATIC, error_pages, make_environment, page
from viewer.session import session_middleware

__all__ = ["page_routes", "page_middleware", "page_errors", "STATIC"]


def _environment() -> Environment:
    env = make_environment()
    # The navigation shows Tools to admins and to owners of emulated feeds (one small query per page).
    env.globals["may_use_tools"] = tools.may_use_tools
    # The header's count of firing alerts, and the feed page's Alerts section (viewer.pages.alerts).
    env.globals["firing_alerts"] = alerts.firing_alerts
    env.globals["alert_rules"] = alerts.rules_for_feed
    return env


def page_routes(settings: Settings) -> list[Route | Mount]:
    """Every page route plus /static."""
    env = _environment()

    def route(path: str, handler: Callable[..., Response], methods: list[str], name: str) -> Route:
        return Route(path, page(settings, env, handler), methods=methods, name=name)

    return [
        route("/", feeds.feed_list, ["GET"], "feed_list"),
        route("/login", accounts.login, ["GET", "POST"], "login"),
        route("/logout", accounts.logout, ["POST"], "logout"),
        route("/register", accounts.register, ["GET", "POST"], "register"),
        route("/account", accounts.account, ["GET"], "account"),
        route("/account/password", accounts.change_password, ["POST"], "change_password"),
        route("/account/tokens", accounts.create_api_token, ["POST"], "create_token"),
        route("/account/tokens/revoke", accounts.revoke_api_token, ["POST"], "revoke_token"),
        route("/feeds", feeds.create_feed_form, ["POST"], "create_feed"),
        route("/feeds/{feed}", feeds.feed_page, ["GET"], "feed"),
        route("/feeds/{feed}/delete", feeds.delete_feed, ["POST"], "delete_feed"),
        route("/feeds/{feed}/axes", feeds.add_axis, ["POST"], "add_axis"),
        route("/feeds/{feed}/shares", sharing.add_share, ["POST"], "add_share"),
        route("/feeds/{feed}/shares/{id:int}/delete", sharing.remove_share, ["POST"], "remove_share"),
        route("/feeds/{feed}/public", sharing.set_public, ["POST"], "set_public"),
        route("/feeds/{feed}/owner", sharing.transfer, ["POST"], "transfer_feed"),
        route("/feeds/{feed}/axes/{axis}", charts.axis_page, ["GET"], "axis"),
        route("/feeds/{feed}/axes/{axis}/rename", feeds.rename_axis, ["POST"], "rename_axis"),
        route("/feeds/{feed}/axes/{axis}/delete", feeds.delete_axis, ["POST"], "delete_axis"),
        route("/feeds/{feed}/graph", charts.graph_page, ["GET"], "graph"),
        route("/feeds/{feed}/sparklines", charts.sparklines_page, ["GET"], "sparklines"),
        route("/dashboards", dashboards.dashboard_list, ["GET"], "dashboards"),
        route("/dashboards", dashboards.create_dashboard, ["POST"], "create_dashboard"),
        route("/dashboards/{dashboard}", dashboards.dashboard_page, ["GET"], "dashboard"),
        route("/groups", groups.groups_page, ["GET"], "groups"),
        route("/groups", groups.create_group, ["POST"], "create_group"),
        route("/groups/{group}/delete", groups.remove_group, ["POST"], "remove_group"),
        route("/groups/{group}/members", groups.add_member, ["POST"], "add_member"),
        route("/groups/{group}/members/remove", groups.remove_member, ["POST"], "remove_member"),
        route("/admin", admin.admin_page, ["GET"], "admin"),
        route("/admin/users", users.users_page, ["GET"], "users"),
        route("/admin/users/{email}", users.change_user, ["POST"], "change_user"),
        route("/admin/users/{email}/remove", users.remove_user, ["POST"], "remove_user"),
        Route("/admin/stream", admin.admin_stream, methods=["GET"], name="admin_stream"),
        route("/alerts", alerts.alerts_page, ["GET"], "alerts"),
        route("/alerts", alerts.add_rule, ["POST"], "add_alert"),
        route("/alerts/{id}/delete", alerts.remove_rule, ["POST"], "remove_alert"),
        route("/alerts/{id}/enabled", alerts.toggle_rule, ["POST"], "toggle_alert"),
        route("/alerts/events/{id}/ack", alerts.acknowledge, ["POST"], "ack_alert"),
        route("/tools", tools.tools_page, ["GET"], "tools"),
        route("/tools/{source}", tools.toggle_source, ["POST"], "toggle_source"),
        # The original app's page URLs (its ingestion URL is in viewer.ingest).
        route(legacy.PREFIX, legacy.legacy_page, ["GET"], "legacy_root"),
        route(legacy.PREFIX + "/{controller}", legacy.legacy_page, ["GET"], "legacy_controller"),
        route(legacy.PREFIX + "/{controller}/{function}", legacy.legacy_page, ["GET"], "legacy_function"),
        route(legacy.PREFIX + "/{controller}/{function}/{arg}", legacy.legacy_page, ["GET"], "legacy_page"),
        Mount("/static", app=StaticFiles(directory=STATIC, check_dir=False), name="static"),
    ]


def page_middleware(settings: Settings) -> list[Middleware]:
    """The signed session cookie. CSRF is checked by every page POST handler against the session."""
    return [session_middleware(settings)]


def page_errors(settings: Settings) -> ErrorPage:
    """Errors on paths outside /api and /service as pages in the site's layout."""
    return error_pages(settings, _environment())
