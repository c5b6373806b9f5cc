"""All settings, read once from environment variables into one typed, immutable object."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

PREFIX = "BROKER_"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port (0-65535)")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return raw.rstrip("/")


def _bool(raw: str) -> bool:
    value = raw.lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _one_of(*values: str) -> Callable[[str], str]:
    """A parser accepting one of `values`, in any letter case."""

    def parse(raw: str) -> str:
        value = next((v for v in values if v.lower() == raw.lower()), None)
        if value is None:
            raise ValueError(f"must be {', '.join(values[:-1])} or {values[-1]}")
        return value

    return parse


ACCOUNT_WRITE_LOCK_MODES = ("auto", "on", "off")


def _setting(default: Any, parse: Callable[[str], Any] = str, doc: str = "") -> Any:
    return field(default=default, metadata={"parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    http_host: str = _setting("127.0.0.1", doc="Address the broker listens on.")
    http_port: int = _setting(8080, _port, "Port the broker listens on.")
    mongo_url: str = _setting("mongodb://127.0.0.1:27017", doc="MongoDB (or FerretDB) connection string.")
    mongo_db: str = _setting("broker", doc="Database name.")
    redis_url: str = _setting("redis://127.0.0.1:6379/0", doc="Redis URL.")
    kafka_bootstrap: str = _setting("127.0.0.1:9092", doc="Kafka bootstrap servers, comma separated.")
    kafka_topic: str = _setting("broker.account-events", doc="Topic for credential events.")
    dependency_timeout: float = _setting(
        2.0, _positive_float, "Seconds each readiness ping and server operation may take."
    )
    request_timeout: float = _setting(
        10.0, _positive_float, "Most seconds the broker spends on one API request before answering 503."
    )
    http_client_timeout: float = _setting(
        10.0, _positive_float, "Total seconds for one outgoing HTTP request (token endpoints, APIs)."
    )
    http_client_connect_timeout: float = _setting(
        5.0, _positive_float, "Seconds to open a connection for an outgoing HTTP request."
    )
    log_level: str = _setting(
        "INFO", _one_of("DEBUG", "INFO", "WARNING", "ERROR"), "DEBUG, INFO, WARNING or ERROR."
    )
    public_url: str = _setting(
        "http://127.0.0.1:8080", _url, "URL browsers reach the broker at; the OAuth callback is under it."
    )
    encryption_keys: str = _setting(
        "", doc="Secret. `kid:base64key,...` (32-byte AES keys); the first encrypts, all decrypt."
    )
    api_key_cache_seconds: float = _setting(
        5.0, _positive_float, "How long a verified API key is trusted before it is checked again."
    )
    extra_providers_dir: str = _setting("", doc="Folder of extra provider definitions (*.yaml).")
    allowed_redirect_uris: str = _setting(
        "", doc="Comma-separated success/error URIs a connect token may land on (exact match)."
    )
    connect_token_ttl: int = _setting(1800, _positive_int, "Seconds a connect token lives.")
    oauth_state_ttl: int = _setting(600, _positive_int, "Seconds an OAuth transaction (state) lives.")
    run_worker: bool = _setting(
        True, _bool, "Run the refresh worker, outbox relay and reconciler inside `serve`."
    )
    refresh_shards: int = _setting(1, _positive_int, "Number of refresh schedule shards (Redis sorted sets).")
    refresh_concurrency: int = _setting(16, _positive_int, "Refreshes one worker runs at once.")
    refresh_batch: int = _setting(50, _positive_int, "Most schedule entries claimed in one go.")
    refresh_lease_seconds: float = _setting(
        60.0, _positive_float, "How long a claim lasts before it comes back."
    )
    refresh_lock_seconds: float = _setting(
        30.0, _positive_float, "Per-account refresh lock lifetime; must exceed BROKER_HTTP_CLIENT_TIMEOUT."
    )
    refresh_lead_seconds: int = _setting(300, _positive_int, "Default time before expiry to refresh.")
    refresh_read_margin: float = _setting(
        60.0,
        _positive_float,
        "A credential read refreshes first when the token expires within this many seconds.",
    )
    refresh_retry_base: float = _setting(1.0, _positive_float, "First retry delay after a transient failure.")
    refresh_retry_max: float = _setting(300.0, _positive_float, "Longest retry delay.")
    refresh_poll_interval: float = _setting(0.25, _positive_float, "Worker sleep when nothing is due.")
    reconcile_interval: float = _setting(60.0, _positive_float, "Seconds between schedule reconciliations.")
    outbox_poll_interval: float = _setting(0.5, _positive_float, "Relay sleep when no event waits.")
    account_write_lock: str = _setting(
        "auto",
        _one_of(*ACCOUNT_WRITE_LOCK_MODES),
        "Per-account Redis lock around each account write: auto (on for FerretDB, whose updates are not "
        "atomic), on or off.",
    )

    @property
    def callback_url(self) -> str:
        return self.public_url.rstrip("/") + "/oauth/callback"

    @property
    def redirect_allowlist(self) -> frozenset[str]:
        return frozenset(u.strip() for u in self.allowed_redirect_uris.split(",") if u.strip())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = f.metadata["parse"](raw.strip())
            except ValueError as exc:
                raise SettingsError(f"{name}={raw!r} is invalid: {exc}") from None
        settings = cls(**values)
        if settings.refresh_lock_seconds <= settings.http_client_timeout:
            # a lock that can expire while its holder still waits for the token endpoint would let a
            # second refresh present the same (rotating) refresh token: RFC 9700 reuse detection
            raise SettingsError("BROKER_REFRESH_LOCK_SECONDS must exceed BROKER_HTTP_CLIENT_TIMEOUT")
        return settings

    @classmethod
    def documentation(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for every setting: the README's table is made from this."""
        return [(PREFIX + f.name.upper(), str(f.default), f.metadata["doc"]) for f in fields(cls)]
