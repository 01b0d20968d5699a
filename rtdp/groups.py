"""Groups of users, to share a feed with many at once (rtdp.sharing). The /groups page, the API
(viewer.groups_api) and `rtdp group` all call these.

Administrators create and remove groups and choose their members; users do not own groups. A
group's members gain every share made to it, so who is in it is a decision about other people's
feeds: left to admins, the permission rule stays "owner, shares, admins, public" with nothing new
to reason about. Any signed-in user sees the groups' names (to share a feed with one) and the
members of the groups they are in; admins see every member.

Adding or removing a member, and removing a group (its shares go with it), bump the rights
revision (rtdp.revision): open streams and subscriptions follow at once. Synchronous (Peewee).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import peewee as pw

from rtdp import revision
from rtdp.accounts import get_user
from rtdp.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from rtdp.models import Group, Membership, User
from rtdp.permissions import Principal, may_administer
from rtdp.topic import check_name

MAX_DESCRIPTION = 500


@dataclass(frozen=True, slots=True)
class GroupView:
    """A group as its viewer may see it: `members` None when they may not see who is in it."""

    name: str
    description: str
    members: list[str] | None = field(default=None)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "members": self.members}


def _admin(actor: Principal, action: str) -> None:
    if not may_administer(actor):
        raise PermissionDenied(f"only an administrator may {action}")


def _group(name: str) -> Group:
    found = Group.get_or_none(Group.name == name[:64]) if len(name) <= 64 else None
    if found is None:
        raise NotFound(f"no group named {name[:64]!r}", field="group")
    return found


def _member(email: str) -> User:
    try:
        return get_user(email)
    except NotFound as exc:
        raise NotFound(exc.message, field="user") from None


def _members(group_ids: list[int]) -> dict[int, list[str]]:
    members: dict[int, list[str]] = {gid: [] for gid in group_ids}
    if group_ids:
        rows = (
            Membership.select(Membership.group, User.email)
            .join(User)
            .where(Membership.group.in_(group_ids))
            .order_by(User.email)
        )
        for row in rows:
            members[row.group_id].append(row.user.email)
    return members


def list_groups(actor: Principal) -> list[GroupView]:
    """Every group by name; members as the module docstring says."""
    groups = list(Group.select().order_by(Group.name))
    members = _members([g.id for g in groups])
    everyone = actor.service or actor.is_admin
    views = []
    for group in groups:
        names = members[group.id]
        shown = names if everyone or actor.email in names else None
        views.append(GroupView(group.name, group.description, shown))
    return views


def create_group(actor: Principal, name: str, description: str = "") -> GroupView:
    _admin(actor, "create groups")
    check_name(name, "group")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"description is longer than {MAX_DESCRIPTION} characters", field="description")
    try:
        with Group._meta.database.atomic():
            Group.create(name=name, description=description)
    except pw.IntegrityError:
        raise Conflict(f"a group named {name!r} exists already", field="group") from None
    return GroupView(name, description, [])


def remove_group(actor: Principal, name: str) -> None:
    """Remove the group, its memberships and the shares made to it."""
    _admin(actor, "remove groups")
    with Group._meta.database.atomic():
        # The database cascades to memberships and shares (ON DELETE CASCADE).
        Group.delete().where(Group.id == _group(name).id).execute()
        revision.bump()


def add_member(actor: Principal, name: str, email: str) -> GroupView:
    _admin(actor, "change a group's members")
    with Group._meta.database.atomic():
        group, user = _group(name), _member(email)
        if not Membership.select().where((Membership.group == group.id) & (Membership.user == user.id)).exists():
            Membership.create(group=group, user=user)
            revision.bump()
    return _view(group)


def remove_member(actor: Principal, name: str, email: str) -> GroupView:
    _admin(actor, "change a group's members")
    with Group._meta.database.atomic():
        group, user = _group(name), _member(email)
        removed = Membership.delete().where((Membership.group == group.id) & (Membership.user == user.id)).execute()
        if not removed:
            raise NotFound(f"{user.email} is not in group {group.name!r}", field="user")
        revision.bump()
    return _view(group)


def _view(group: Group) -> GroupView:
    return GroupView(group.name, group.description, _members([group.id])[group.id])
