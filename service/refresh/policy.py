"""Refresh decisions as pure functions: when a token is due, how long to back off, what an error means."""

from __future__ import annotations

import datetime as dt
import random

MIN_LEAD_FRACTION = 0.5  # a short-lived token refreshes at the latest half-way through its life
JITTER_FRACTION = 0.2  # spread of due times, as a fraction of the lead


def due_time(
    expires_at: dt.datetime, lead_seconds: float, now: dt.datetime, rng: random.Random | None = None
) -> dt.datetime:
    """expires_at - lead - jitter. The lead shrinks for tokens that live shorter than twice the lead, and
    the jitter (up to 20% of the lead, earlier only) keeps tokens issued together from refreshing together."""
    remaining = max(0.0, (expires_at - now).total_seconds())
    lead = min(lead_seconds, remaining * MIN_LEAD_FRACTION)
    jitter = (rng or random).uniform(0.0, lead * JITTER_FRACTION)
    return expires_at - dt.timedelta(seconds=lead + jitter)


def backoff_seconds(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with full jitter (attempt 1 -> up to base, 2 -> up to 2*base, ...), never
    sooner than the server's Retry-After."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, max(cap, retry_after or 0.0))


def needs_refresh(expires_at: dt.datetime | None, margin_seconds: float, now: dt.datetime) -> bool:
    return expires_at is not None and (expires_at - now).total_seconds() <= margin_seconds
