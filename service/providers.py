"""Provider definitions: loads providers/*.yaml (and an extra folder), validates them against
providers/schema.json, and turns them into typed, immutable objects. Adding a provider is data only."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import jsonschema
import yaml

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "providers"
SCHEMA_PATH = BUILTIN_DIR / "schema.json"

AuthType = Literal["oauth2", "api_key", "basic"]
ACCESS_TOKEN_FIELD = "oauth_access_token"


class ProviderLoadError(Exception):
    """A definition is invalid: names the file and the failing field."""

    def __init__(self, path: Path, where: str, problem: str) -> None:
        super().__init__(f"{path}: {where or '(top level)'}: {problem}")
        self.path = path
        self.where = where


class ProviderInputError(ValueError):
    """A connection setting given by a user is missing or malformed."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"connection setting {setting!r} {problem}")
        self.setting = setting


@dataclass(frozen=True)
class ConnectionSetting:
    name: str
    label: str
    pattern: re.Pattern[str]
    default: str | None = None
    example: str | None = None


@dataclass(frozen=True)
class CredentialField:
    name: str
    label: str
    secret: bool = True
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True)
class OAuth2Config:
    authorize_url: str | None
    token_url: str | None
    issuer: str | None = None
    discovery: bool = False
    iss_parameter_supported: bool = False
    refresh_url: str | None = None
    revocation_url: str | None = None
    revocation_client_auth: str | None = None
    scopes: tuple[str, ...] = ()
    scope_separator: str = " "
    scope_param: str = "scope"
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    token_params: Mapping[str, str] = field(default_factory=dict)
    refresh_params: Mapping[str, str] = field(default_factory=dict)
    client_auth: str = "client_secret_basic"
    pkce: bool = True
    token_request_format: str = "form"
    token_response_path: str | None = None
    metadata_fields: Mapping[str, str] = field(default_factory=dict)
    default_expires_in: int | None = None
    refresh_lead_seconds: int = 300
    rotates_refresh_token: bool = False


@dataclass(frozen=True)
class ApiAuth:
    style: Literal["bearer", "basic", "header", "query"]
    field: str | None = None
    username_field: str | None = None
    password_field: str | None = None
    header: str | None = None
    prefix: str = ""
    param: str | None = None


@dataclass(frozen=True)
class TestRequest:
    path: str
    method: str = "GET"
    expected_status: int = 200


@dataclass(frozen=True)
class ApiConfig:
    base_url: str
    auth: ApiAuth
    headers: Mapping[str, str] = field(default_factory=dict)
    test_request: TestRequest | None = None


@dataclass(frozen=True)
class Provider:
    name: str
    display_name: str
    auth_type: AuthType
    api: ApiConfig
    source: Path
    docs_url: str | None = None
    connection_settings: tuple[ConnectionSetting, ...] = ()
    oauth2: OAuth2Config | None = None
    credential_fields: tuple[CredentialField, ...] = ()

    @property
    def is_oauth(self) -> bool:
        return self.oauth2 is not None

    def resolve_settings(self, given: Mapping[str, Any] | None) -> dict[str, str]:
        """The connection settings for one account: defaults filled in, each value checked.
        Raises ProviderInputError naming the setting."""
        given = dict(given or {})
        known = {s.name for s in self.connection_settings}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ProviderInputError(unknown[0], f"is not a setting of provider {self.name!r}")
        resolved: dict[str, str] = {}
        for setting in self.connection_settings:
            value = given.get(setting.name, setting.default)
            if value is None or value == "":
                raise ProviderInputError(setting.name, "is required")
            if not isinstance(value, str) or not setting.pattern.fullmatch(value):
                raise ProviderInputError(setting.name, f"must match {setting.pattern.pattern}")
            resolved[setting.name] = value
        return resolved


def placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def render_url(template: str, values: Mapping[str, str]) -> str:
    """Fills {name} placeholders. A value filling a whole URL (Salesforce's `{instance_url}`) is
    kept as is; any other value is percent-encoded so it cannot change the URL's structure."""
    names = placeholders(template)
    if template.startswith("{") and len(names) >= 1 and template.startswith("{" + names[0] + "}"):
        head = values[names[0]]
        rest = template[len(names[0]) + 2 :]
        return head.rstrip("/") + _render_encoded(rest, values)
    return _render_encoded(template, values)


def _render_encoded(template: str, values: Mapping[str, str]) -> str:
    return template.format_map({k: quote(str(v), safe="") for k, v in values.items()})


def check_url_scheme(url: str) -> bool:
    """https anywhere; plain http only on loopback (local demo and test providers)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in {"127.0.0.1", "localhost", "::1"}


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _first_error(document: Any) -> jsonschema.ValidationError | None:
    best: jsonschema.ValidationError | None = jsonschema.exceptions.best_match(
        _validator().iter_errors(document)
    )
    return best


def _compile(path: Path, where: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ProviderLoadError(path, where, f"invalid regular expression: {exc}") from None


def parse_provider(path: Path, document: Any) -> Provider:
    error = _first_error(document)
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        raise ProviderLoadError(path, where, error.message)
    doc: dict[str, Any] = document
    if doc["name"] != path.stem:
        raise ProviderLoadError(path, "name", f"must equal the file name {path.stem!r}")

    settings = tuple(
        ConnectionSetting(
            name=s["name"],
            label=s["label"],
            pattern=_compile(path, f"connection_settings.{i}.pattern", s["pattern"]),
            default=s.get("default"),
            example=s.get("example"),
        )
        for i, s in enumerate(doc.get("connection_settings") or [])
    )
    fields_ = tuple(
        CredentialField(
            name=f["name"],
            label=f["label"],
            secret=f.get("secret", True),
            pattern=None
            if f.get("pattern") is None
            else _compile(path, f"credential_fields.{i}", f["pattern"]),
        )
        for i, f in enumerate(doc.get("credential_fields") or [])
    )
    oauth2 = _parse_oauth2(doc["oauth2"]) if doc.get("oauth2") else None
    api = _parse_api(doc["api"], oauth=oauth2 is not None)
    provider = Provider(
        name=doc["name"],
        display_name=doc["display_name"],
        auth_type=doc["auth_type"],
        docs_url=doc.get("docs_url"),
        connection_settings=settings,
        oauth2=oauth2,
        credential_fields=fields_,
        api=api,
        source=path,
    )
    _check_placeholders(path, provider)
    return provider


def _drop_nulls(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}


def _parse_oauth2(raw: Mapping[str, Any]) -> OAuth2Config:
    values = _drop_nulls(raw)
    values.setdefault("authorize_url", None)
    values.setdefault("token_url", None)
    for key in ("authorize_params", "token_params", "refresh_params", "metadata_fields"):
        values[key] = dict(values.get(key) or {})
    values["scopes"] = tuple(values.get("scopes") or ())
    return OAuth2Config(**values)


def _parse_api(raw: Mapping[str, Any], *, oauth: bool) -> ApiConfig:
    auth = _drop_nulls(raw["auth"])
    if auth["style"] == "bearer" and "field" not in auth and oauth:
        auth["field"] = ACCESS_TOKEN_FIELD
    test = raw.get("test_request")
    return ApiConfig(
        base_url=raw["base_url"],
        auth=ApiAuth(**auth),
        headers=dict(raw.get("headers") or {}),
        test_request=None if test is None else TestRequest(**_drop_nulls(test)),
    )


def _check_placeholders(path: Path, provider: Provider) -> None:
    settings = {s.name for s in provider.connection_settings}
    metadata = set(provider.oauth2.metadata_fields) if provider.oauth2 else set()
    credentials = {f.name for f in provider.credential_fields}
    if provider.oauth2:
        credentials |= {ACCESS_TOKEN_FIELD}
        for key in ("authorize_url", "token_url", "refresh_url", "revocation_url"):
            template = getattr(provider.oauth2, key)
            for name in placeholders(template or ""):
                if name not in settings:
                    raise ProviderLoadError(path, f"oauth2.{key}", f"{{{name}}} is not a connection setting")
        if not provider.oauth2.discovery and not (
            provider.oauth2.authorize_url and provider.oauth2.token_url
        ):
            raise ProviderLoadError(
                path, "oauth2", "authorize_url and token_url are required without discovery"
            )
    api_names = settings | metadata | credentials
    for where, template in (("api.base_url", provider.api.base_url),) + (
        (("api.test_request.path", provider.api.test_request.path),) if provider.api.test_request else ()
    ):
        for name in placeholders(template):
            if name not in api_names:
                raise ProviderLoadError(
                    path, where, f"{{{name}}} is not a setting, metadata or credential field"
                )
    auth = provider.api.auth
    for used in (auth.field, auth.username_field, auth.password_field):
        if used is not None and used not in credentials:
            raise ProviderLoadError(path, "api.auth", f"{used!r} is not a credential field")


def load_file(path: Path) -> Provider:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ProviderLoadError(path, "", f"cannot read YAML: {exc}") from None
    return parse_provider(path, document)


class ProviderCatalog:
    """Every provider the broker knows, by name."""

    def __init__(self, providers: Iterable[Provider]) -> None:
        self._by_name: dict[str, Provider] = {}
        for provider in providers:
            if provider.name in self._by_name:
                first = self._by_name[provider.name].source
                raise ProviderLoadError(
                    provider.source, "name", f"{provider.name!r} is already defined in {first}"
                )
            self._by_name[provider.name] = provider

    @classmethod
    def load(cls, extra_dir: Path | None = None) -> ProviderCatalog:
        files = sorted(BUILTIN_DIR.glob("*.yaml"))
        if extra_dir is not None:
            if not extra_dir.is_dir():
                raise ProviderLoadError(extra_dir, "", "extra providers directory does not exist")
            files += sorted(extra_dir.glob("*.yaml"))
        return cls(load_file(path) for path in files)

    def get(self, name: str) -> Provider | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)
