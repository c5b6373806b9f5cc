"""Every Redis key the broker writes, in one place (prefix `broker:`)."""

from __future__ import annotations

PREFIX = "broker:"


def connect_token(token_hash: str) -> str:
    return f"{PREFIX}connect-token:{token_hash}"


def oauth_transaction(state_hash: str) -> str:
    return f"{PREFIX}oauth-tx:{state_hash}"
