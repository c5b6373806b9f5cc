"""Every Redis key the broker writes, in one place (prefix `broker:`)."""

from __future__ import annotations

PREFIX = "broker:"


def connect_token(token_hash: str) -> str:
    return f"{PREFIX}connect-token:{token_hash}"


def oauth_transaction(state_hash: str) -> str:
    return f"{PREFIX}oauth-tx:{state_hash}"


def refresh_due(shard: int) -> str:
    # {rN} is a Redis Cluster hash tag: a shard's keys (and the Lua script touching both) share a slot.
    return f"{PREFIX}refresh:{{r{shard}}}:due"


def refresh_leased(shard: int) -> str:
    return f"{PREFIX}refresh:{{r{shard}}}:leased"


def account_lock(account_id: str) -> str:
    return f"{PREFIX}lock:account:{account_id}"


def account_write_lock(account_id: str) -> str:
    return f"{PREFIX}lock:account-write:{account_id}"


def singleton_lock(name: str) -> str:
    return f"{PREFIX}lock:singleton:{name}"


def pending_credential(account_id: str) -> str:
    return f"{PREFIX}pending-credential:{account_id}"
