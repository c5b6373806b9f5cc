"""Refresh timing: due before expiry with jitter, backoff that grows and honours Retry-After."""

from __future__ import annotations

import datetime as dt
import random

from service.refresh.policy import backoff_seconds, due_time, needs_refresh

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_a_long_lived_token_is_due_a_lead_before_expiry_with_spread() -> None:
    rng = random.Random(7)
    expires = NOW + dt.timedelta(hours=1)
    dues = [due_time(expires, 300, NOW, rng) for _ in range(1000)]
    earliest, latest = min(dues), max(dues)
    assert latest <= expires - dt.timedelta(seconds=300)
    assert earliest >= expires - dt.timedelta(seconds=360)
    assert (latest - earliest).total_seconds() > 50  # spread, not one second for everyone


def test_a_short_lived_token_is_refreshed_half_way_at_the_latest() -> None:
    expires = NOW + dt.timedelta(seconds=4)
    due = due_time(expires, 300, NOW, random.Random(1))
    assert NOW < due <= NOW + dt.timedelta(seconds=2)


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    rng = random.Random(3)
    delays = [backoff_seconds(n, base=1, cap=60, rng=rng) for n in range(1, 10)]
    assert 0.5 <= delays[0] <= 1
    assert 4 <= delays[3] <= 8
    assert max(delays) <= 60
    assert backoff_seconds(1, base=1, cap=60, retry_after=30, rng=rng) >= 30


def test_needs_refresh_inside_the_margin_only() -> None:
    assert needs_refresh(NOW + dt.timedelta(seconds=30), 60, NOW)
    assert not needs_refresh(NOW + dt.timedelta(seconds=90), 60, NOW)
    assert not needs_refresh(None, 60, NOW)
