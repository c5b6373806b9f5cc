"""One refresh, done exactly once: an owner lock per account, a re-read under the lock (skip when someone
else already refreshed), the token call, and a compare-and-swap write that stores the new refresh token
in the same update (RFC 6749 §6, RFC 9700 §4.14.2 rotation). Failures are decided by a small pure
function and applied in one place."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from dataclasses import dataclass
from enum import StrEnum

import pymongo.errors
import redis.asyncio as redis

from service import redis_keys
from service.config import Settings
from service.events import schema as events
from service.metrics import REFRESH_ATTEMPTS, REFRESH_DURATION, TOKEN_ENDPOINT_RESPONSES
from service.oauth.discovery import Discovery, DiscoveryError
from service.oauth.protocol import ClientCredentials
from service.oauth.token_client import TokenClient, TokenEndpointError
from service.providers import Provider, ProviderCatalog
from service.refresh.locks import OwnedLock
from service.refresh.pending import PendingCredentials
from service.refresh.policy import backoff_seconds, due_time, needs_refresh
from service.refresh.schedule import RefreshSchedule
from service.store.accounts import Account, AccountStore, Credentials
from service.store.oauth_apps import OAuthAppStore

log = logging.getLogger("broker.refresh")


class Outcome(StrEnum):
    REFRESHED = "refreshed"
    ALREADY_FRESH = "already_fresh"  # someone else refreshed first: nothing to do
    LOCKED = "locked"  # another refresh of this account is in flight right now
    NOT_REFRESHABLE = "not_refreshable"
    TRANSIENT_FAILURE = "transient_failure"
    TERMINAL_FAILURE = "terminal_failure"
    GONE = "gone"


@dataclass(frozen=True)
class RefreshResult:
    outcome: Outcome
    account: Account | None = None
    retry_in: float | None = None


def _status_class(exc: TokenEndpointError | None) -> str:
    if exc is None:
        return "2xx"
    if exc.status is None:
        return "timeout" if exc.code == "token_endpoint_timeout" else "error"
    return f"{exc.status // 100}xx"


class Refresher:
    def __init__(
        self,
        *,
        settings: Settings,
        redis_client: redis.Redis,
        accounts: AccountStore,
        oauth_apps: OAuthAppStore,
        catalog: ProviderCatalog,
        tokens: TokenClient,
        discovery: Discovery,
        schedule: RefreshSchedule,
    ) -> None:
        self.settings = settings
        self._redis = redis_client
        self.accounts = accounts
        self._apps = oauth_apps
        self._catalog = catalog
        self._tokens = tokens
        self._discovery = discovery
        self.schedule = schedule
        self._in_flight: dict[str, asyncio.Task[RefreshResult]] = {}
        self.pending = PendingCredentials(redis_client, accounts.keyring)

    # ------------------------------------------------------------ scheduling

    def lead_for(self, provider: Provider | None) -> float:
        if provider is not None and provider.oauth2 is not None:
            return float(provider.oauth2.refresh_lead_seconds)
        return float(self.settings.refresh_lead_seconds)

    def planned(self, creds: Credentials, provider: Provider) -> Credentials:
        """The credential with its refresh time: expiring OAuth tokens with a refresh token only."""
        if provider.oauth2 is None or creds.expires_at is None or not creds.values.get("oauth_refresh_token"):
            return dataclasses.replace(creds, refresh_at=None)
        due = due_time(creds.expires_at, self.lead_for(provider), dt.datetime.now(dt.UTC))
        return dataclasses.replace(creds, refresh_at=due)

    def refreshable(self, account: Account) -> bool:
        """An OAuth account in good standing: it may be refreshed on demand (a read inside the margin, a
        401 through the proxy), also when its token has no known expiry. Whether it has a refresh token
        is known only after decryption, under the lock."""
        provider = self._catalog.get(account.provider)
        return (
            provider is not None
            and provider.oauth2 is not None
            and account.status in ("active", "refreshing_failed")
            and bool(account.credentials_blob)
        )

    async def plan(self, account: Account) -> None:
        """Puts the account on the schedule at its next_refresh_at (expiring tokens with a refresh token
        only), or takes it off. Called after every write; a Redis failure here is repaired by the
        reconciler."""
        try:
            if self.refreshable(account) and account.next_refresh_at is not None:
                await self.schedule.schedule(account.id, account.next_refresh_at.timestamp())
            else:
                await self.schedule.unschedule(account.id)
        except (redis.RedisError, OSError) as exc:
            log.warning(
                "could not update the refresh schedule",
                extra={"account_id": account.id, "error": type(exc).__name__},
            )

    # ------------------------------------------------------------ on-demand (credential reads)

    async def ensure_fresh(self, account: Account) -> Account:
        """For a credential read: refreshes first when the token is inside the read margin. Concurrent
        readers in this process share one refresh; readers in other processes wait for the lock holder."""
        now = dt.datetime.now(dt.UTC)
        if not needs_refresh(account.expires_at, self.settings.refresh_read_margin, now):
            return account
        if not self.refreshable(account):
            return account
        # Wait for another process's refresh only briefly: a read must answer within its own time (a still
        # valid token is served as it is; an expired one is never served).
        deadline = time.monotonic() + 2 * self.settings.dependency_timeout
        while True:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    result = await self.refresh_shared(account.id, account.version)
            except TimeoutError:
                break  # the refresh goes on in the background; this read answers now
            if result.outcome != Outcome.LOCKED or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
            current = await self.accounts.get_by_id(account.id)
            if current is None or current.version != account.version:
                break  # the other refresh finished
        return await self.accounts.get_by_id(account.id) or account

    async def refresh_shared(self, account_id: str, seen_version: int) -> RefreshResult:
        """One refresh task per account in this process, however many readers ask at once."""
        task = self._in_flight.get(account_id)
        if task is None:
            task = asyncio.create_task(self.refresh(account_id, seen_version=seen_version))
            self._in_flight[account_id] = task
            task.add_done_callback(lambda _: self._in_flight.pop(account_id, None))
        return await asyncio.shield(task)

    # ------------------------------------------------------------ the refresh

    async def refresh(self, account_id: str, *, seen_version: int | None = None) -> RefreshResult:
        """A scheduled refresh (seen_version None) skips an account whose next_refresh_at lies ahead:
        another refresh got there first. An on-demand one skips when the version it saw has changed."""
        lock = OwnedLock(self._redis, redis_keys.account_lock(account_id), self.settings.refresh_lock_seconds)
        if not await lock.acquire():
            return RefreshResult(Outcome.LOCKED)
        started = time.perf_counter()
        provider_name = "unknown"
        outcome = "error"  # stays so when a dependency fails mid-refresh
        try:
            account = await self.accounts.get_by_id(account_id)
            if account is None:
                await self.schedule.unschedule(account_id)
                return RefreshResult(Outcome.GONE)
            provider_name = account.provider
            result = await self._refresh_locked(account, seen_version=seen_version, lock=lock)
            outcome = result.outcome.value
            return result
        finally:
            if provider_name != "unknown":
                REFRESH_ATTEMPTS.labels(provider_name, outcome).inc()
            REFRESH_DURATION.labels(provider_name).observe(time.perf_counter() - started)
            # bookkeeping that must happen even if the caller is cancelled (shutdown)
            with contextlib.suppress(redis.RedisError, OSError):  # Redis down: the lock expires by itself
                await asyncio.shield(lock.release())

    async def _refresh_locked(
        self, account: Account, *, seen_version: int | None, lock: OwnedLock
    ) -> RefreshResult:
        provider = self._catalog.get(account.provider)
        now = dt.datetime.now(dt.UTC)
        if provider is None or provider.oauth2 is None or not self.refreshable(account):
            await self.schedule.unschedule(account.id)
            return RefreshResult(Outcome.NOT_REFRESHABLE, account)
        if seen_version is not None:
            already = account.version != seen_version
        else:
            # a claim is stale when the account's next refresh lies ahead, or when none is planned at all
            soon = now + dt.timedelta(seconds=1)
            already = account.next_refresh_at is None or account.next_refresh_at > soon
        if already:
            await self.plan(account)  # a refresh already happened: just make sure the next one is planned
            return RefreshResult(Outcome.ALREADY_FRESH, account)
        recovered = await self._recover_pending(account)
        if recovered is not None:
            return recovered
        values = self.accounts.decrypt(account)
        refresh_token = values.get("oauth_refresh_token")
        if not refresh_token:
            await self.schedule.unschedule(account.id)
            return RefreshResult(Outcome.NOT_REFRESHABLE, account)
        app = await self._apps.get(account.workspace_id, provider.name)
        error: TokenEndpointError | None = None
        try:
            if app is None:
                raise TokenEndpointError(
                    "oauth_app_not_configured", "no OAuth app registered", transient=True
                )
            endpoints = await self._discovery.endpoints(provider, account.connection_settings)
            client = ClientCredentials(app.client_id, app.client_secret, provider.oauth2.client_auth)
            tokens = await self._tokens.refresh(
                provider.oauth2, endpoints, client, refresh_token=refresh_token, scopes=account.scopes
            )
        except DiscoveryError as exc:
            error = TokenEndpointError("provider_discovery_failed", str(exc), transient=True)
        except TokenEndpointError as exc:
            error = exc
        if app is not None or error is None:
            TOKEN_ENDPOINT_RESPONSES.labels(provider.name, _status_class(error)).inc()
        if error is not None:
            return await self._apply_failure(account, error)
        creds = self.planned(
            Credentials(
                values={
                    "oauth_access_token": tokens.access_token,
                    "oauth_token_type": tokens.token_type,
                    **({"oauth_refresh_token": tokens.refresh_token} if tokens.refresh_token else {}),
                },
                expires_at=tokens.expires_at,
                scopes=tokens.scopes or account.scopes,
                metadata={**account.metadata, **tokens.metadata},
            ),
            provider,
        )
        try:
            await self.pending.put(account.id, account.version, creds)
        except (redis.RedisError, OSError):
            log.warning("could not stash the rotated credential", extra={"account_id": account.id})
        updated = await self._write_rotated(account, creds, lock)
        if updated is None:
            updated = await self._landed_anyway(account, creds)
        with contextlib.suppress(redis.RedisError, OSError):
            await self.pending.drop(account.id)
        if updated is None:
            # Only a reconnect or import can write while we hold the lock; theirs is the newer grant.
            log.warning(
                "refresh result discarded: account changed meanwhile", extra={"account_id": account.id}
            )
            current = await self.accounts.get_by_id(account.id)
            if current is not None:
                await self.plan(current)
            return RefreshResult(Outcome.ALREADY_FRESH, current)
        await self.plan(updated)
        log.info(
            "refreshed",
            extra={"account_id": account.id, "provider": provider.name, "version": updated.version},
        )
        return RefreshResult(Outcome.REFRESHED, updated)

    async def _landed_anyway(self, account: Account, creds: Credentials) -> Account | None:
        """A write whose reply was lost (a client timeout) may have landed: then the retry's compare-and-
        swap misses, and the account holds exactly our new refresh token one version later."""
        current = await self.accounts.get_by_id(account.id)
        if current is None or current.version != account.version + 1:
            return None
        ours = creds.values.get("oauth_refresh_token")
        return current if ours and self.accounts.decrypt(current).get("oauth_refresh_token") == ours else None

    async def _recover_pending(self, account: Account) -> RefreshResult | None:
        """A rotated credential stashed by a refresh that died before its MongoDB write: store it now
        (it is the only live grant), without calling the provider."""
        stashed = await self.pending.get(account.id)
        if stashed is None:
            return None
        base_version, creds = stashed
        if base_version != account.version:
            await self.pending.drop(account.id)
            return None  # stale: the write did land, or a reconnect replaced the grant since
        # the stash is dropped only once the write has landed: a failure here keeps it for the next try
        updated = await self.accounts.replace_credentials(account, creds, kind=events.ROTATED, refreshed=True)
        await self.pending.drop(account.id)
        if updated is None:
            return RefreshResult(Outcome.ALREADY_FRESH, await self.accounts.get_by_id(account.id))
        await self.plan(updated)
        log.warning(
            "stored a rotated credential left by an interrupted refresh", extra={"account_id": account.id}
        )
        return RefreshResult(Outcome.REFRESHED, updated)

    async def _write_rotated(self, account: Account, creds: Credentials, lock: OwnedLock) -> Account | None:
        """The provider has rotated the grant: its new refresh token exists only in memory now. Losing it
        would force a reconnect (the old one is dead, and presenting it again trips reuse detection), so
        a write that fails because MongoDB is unreachable is retried while this process holds the lock."""
        deadline = time.monotonic() + self.settings.refresh_lock_seconds * 0.8
        delay = 0.2
        while True:
            try:
                return await self.accounts.replace_credentials(
                    account, creds, kind=events.ROTATED, refreshed=True
                )
            except (pymongo.errors.ConnectionFailure, pymongo.errors.ExecutionTimeout) as exc:
                if time.monotonic() + delay > deadline or not await self._extend(lock):
                    log.error(
                        "rotated credential could not be stored",
                        extra={"account_id": account.id, "error": type(exc).__name__},
                    )
                    raise
                log.warning(
                    "storing the rotated credential failed; retrying", extra={"account_id": account.id}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _extend(self, lock: OwnedLock) -> bool:
        try:
            return await lock.extend()
        except (redis.RedisError, OSError):
            return True  # Redis is down too: nobody else can take the lock meanwhile either

    async def _apply_failure(self, account: Account, error: TokenEndpointError) -> RefreshResult:
        now = dt.datetime.now(dt.UTC)
        details = {
            "code": error.code,
            "message": str(error)[:300],
            "at": now.isoformat(),
            **({"status": error.status} if error.status else {}),
        }
        if not error.transient:
            # RFC 6749 §5.2: the grant is dead, unless a concurrent refresh replaced it meanwhile.
            current = await self.accounts.get_by_id(account.id)
            if current is None or current.version != account.version:
                return RefreshResult(Outcome.ALREADY_FRESH, current)
            updated = await self.accounts.record_failure(
                account,
                status="reauthorization_required",
                error=details,
                kind=events.REAUTHORIZATION_REQUIRED,
                attempt=account.refresh_attempts + 1,
            )
            await self.schedule.unschedule(account.id)
            log.warning(
                "reauthorization required", extra={"account_id": account.id, "error_code": error.code}
            )
            return RefreshResult(Outcome.TERMINAL_FAILURE, updated)
        attempt = account.refresh_attempts + 1
        delay = backoff_seconds(
            attempt,
            base=self.settings.refresh_retry_base,
            cap=self.settings.refresh_retry_max,
            retry_after=error.retry_after,
        )
        expired = account.expires_at is not None and account.expires_at <= now
        updated = await self.accounts.record_failure(
            account,
            status="refreshing_failed" if expired else "active",
            error=details,
            kind=events.REFRESH_FAILED,
            attempt=attempt,
        )
        await self.schedule.schedule(account.id, time.time() + delay)
        log.info(
            "refresh failed, will retry",
            extra={
                "account_id": account.id,
                "error_code": error.code,
                "attempt": attempt,
                "retry_in": round(delay, 2),
            },
        )
        return RefreshResult(Outcome.TRANSIENT_FAILURE, updated, retry_in=delay)
