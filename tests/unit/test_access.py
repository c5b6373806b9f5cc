"""Every cell of seed 002's two access tables, on the pure policy function."""

from __future__ import annotations

import pytest

from service.access import Operation, Principal, can

OWNER_MEMBER = "mem_owner"
ALL_SCOPES = frozenset({"accounts:read", "credentials:read", "accounts:write", "connect", "admin"})


def principal(role: str, member_id: str) -> Principal:
    return Principal(workspace_id="ws", member_id=member_id, role=role, scopes=ALL_SCOPES, api_key_id="key")


# (operation, workspace owner & admin, other members) -- straight from the seed's tables
PRIVATE_TABLE = [
    (Operation.VIEW, True, False),
    (Operation.USE_CREDENTIALS, False, False),
    (Operation.MODIFY, False, False),
    (Operation.TEST, True, True),
    (Operation.MANAGE_ACCESS, True, False),
    (Operation.RECONNECT, True, False),
    (Operation.DELETE, True, False),
]
SHARED_TABLE = [
    (Operation.VIEW, True, True),
    (Operation.USE_CREDENTIALS, True, True),
    (Operation.MODIFY, True, True),
    (Operation.TEST, True, True),
    (Operation.MANAGE_ACCESS, True, False),
    (Operation.RECONNECT, True, False),
    (Operation.DELETE, True, False),
]


@pytest.mark.parametrize(("operation", "admins", "members"), PRIVATE_TABLE)
@pytest.mark.parametrize("admin_role", ["owner", "admin"])
def test_private_account_table(operation: Operation, admins: bool, members: bool, admin_role: str) -> None:
    assert can(principal(admin_role, "mem_admin"), OWNER_MEMBER, "private", operation) is admins
    assert can(principal("member", "mem_other"), OWNER_MEMBER, "private", operation) is members


@pytest.mark.parametrize(("operation", "admins", "members"), SHARED_TABLE)
@pytest.mark.parametrize("sharing", ["workspace", ["mem_other"]], ids=["workspace", "named-member"])
@pytest.mark.parametrize("admin_role", ["owner", "admin"])
def test_shared_account_table(
    operation: Operation, admins: bool, members: bool, sharing: object, admin_role: str
) -> None:
    assert can(principal(admin_role, "mem_admin"), OWNER_MEMBER, sharing, operation) is admins
    assert can(principal("member", "mem_other"), OWNER_MEMBER, sharing, operation) is members


@pytest.mark.parametrize(("operation", "_admins", "members"), PRIVATE_TABLE)
def test_a_member_not_named_in_the_sharing_list_is_treated_as_private(
    operation: Operation, _admins: bool, members: bool
) -> None:
    assert can(principal("member", "mem_third"), OWNER_MEMBER, ["mem_other"], operation) is members


@pytest.mark.parametrize("operation", list(Operation))
@pytest.mark.parametrize("sharing", ["private", "workspace", ["mem_x"]])
def test_the_member_who_connected_it_may_always_do_everything(operation: Operation, sharing: object) -> None:
    assert can(principal("member", OWNER_MEMBER), OWNER_MEMBER, sharing, operation)
