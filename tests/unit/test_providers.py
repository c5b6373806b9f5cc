"""Provider definitions are data: every shipped file passes the schema, and a bad file stops start-up
naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from service.providers import (
    BUILTIN_DIR,
    SCHEMA_PATH,
    ProviderCatalog,
    ProviderInputError,
    ProviderLoadError,
    render_url,
)

SHIPPED = sorted(BUILTIN_DIR.glob("*.yaml"))
REQUIRED = {
    "github",
    "google",
    "slack",
    "salesforce",
    "microsoft",
    "notion",
    "dropbox",
    "hubspot",
    "atlassian",
    "shopify",
    "zoom",
    "xero",
    "sendgrid",
    "stripe",
    "postmark",
    "twilio",
}


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_definition_passes_the_schema(path: Path) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
    assert not errors, [e.message for e in errors]


def test_the_catalog_ships_every_required_provider() -> None:
    catalog = ProviderCatalog.load()
    assert set(catalog.names()) >= REQUIRED
    for name in ("sendgrid", "stripe", "postmark", "twilio"):
        provider = catalog.get(name)
        assert provider is not None
        assert not provider.is_oauth
        assert provider.credential_fields


def test_key_based_providers_use_the_names_their_users_know() -> None:
    catalog = ProviderCatalog.load()
    fields = {
        n: [f.name for f in catalog.get(n).credential_fields] for n in ("sendgrid", "postmark", "twilio")
    }  # type: ignore[union-attr]
    assert fields == {
        "sendgrid": ["api_key"],
        "postmark": ["server_token"],
        "twilio": ["account_sid", "auth_token"],
    }


def _write(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "extra"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(text)
    return folder


GOOD = """
name: inhouse
display_name: In-house SSO
auth_type: oauth2
oauth2:
  authorize_url: https://sso.example.com/authorize
  token_url: https://sso.example.com/token
  client_auth: client_secret_basic
api:
  base_url: https://api.example.com
  auth: {style: bearer}
"""


def test_an_extra_directory_adds_providers_without_code(tmp_path: Path) -> None:
    catalog = ProviderCatalog.load(_write(tmp_path, "inhouse", GOOD))
    provider = catalog.get("inhouse")
    assert provider is not None
    assert provider.oauth2 is not None
    assert provider.oauth2.pkce is True  # on by default


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (GOOD.replace("  token_url: https://sso.example.com/token\n", ""), "oauth2"),
        (GOOD.replace("client_auth: client_secret_basic", "client_auth: magic"), "oauth2.client_auth"),
        (GOOD + "unexpected: 1\n", ""),
        (
            GOOD.replace("https://sso.example.com/authorize", "http://sso.example.com/authorize"),
            "oauth2.authorize_url",
        ),
        (GOOD.replace("https://api.example.com", "https://{tenant}.example.com"), "api.base_url"),
    ],
    ids=["no-token-url", "bad-enum", "unknown-field", "plain-http", "undeclared-placeholder"],
)
def test_a_bad_definition_stops_loading_naming_file_and_field(tmp_path: Path, text: str, where: str) -> None:
    folder = _write(tmp_path, "inhouse", text)
    with pytest.raises(ProviderLoadError) as caught:
        ProviderCatalog.load(folder)
    assert caught.value.path.name == "inhouse.yaml"
    assert caught.value.where == where
    assert "inhouse.yaml" in str(caught.value)


def test_a_name_that_differs_from_the_file_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProviderLoadError, match="must equal the file name"):
        ProviderCatalog.load(_write(tmp_path, "other", GOOD))


def test_a_provider_cannot_be_defined_twice(tmp_path: Path) -> None:
    with pytest.raises(ProviderLoadError, match="already defined"):
        ProviderCatalog.load(_write(tmp_path, "github", GOOD.replace("inhouse", "github")))


def test_connection_settings_are_checked_and_defaulted() -> None:
    catalog = ProviderCatalog.load()
    shopify = catalog.get("shopify")
    microsoft = catalog.get("microsoft")
    assert shopify is not None
    assert microsoft is not None
    with pytest.raises(ProviderInputError, match="shop"):
        shopify.resolve_settings({})
    with pytest.raises(ProviderInputError, match="shop"):
        shopify.resolve_settings({"shop": "evil.com/x?"})
    with pytest.raises(ProviderInputError, match="not a setting"):
        shopify.resolve_settings({"shop": "ok", "host": "evil.com"})
    assert "tenant" in microsoft.resolve_settings({})  # defaulted (common)


def test_templated_urls_cannot_be_bent_by_setting_values() -> None:
    assert (
        render_url("https://{shop}.myshopify.com/x", {"shop": "a/b?c"}) == "https://a%2Fb%3Fc.myshopify.com/x"
    )
    assert render_url("{instance_url}/services", {"instance_url": "https://na1.salesforce.com/"}) == (
        "https://na1.salesforce.com/services"
    )


def test_the_demo_providers_of_make_run_load_from_their_extra_folder() -> None:
    catalog = ProviderCatalog.load(BUILTIN_DIR.parent / "deploy" / "local" / "demo-providers")
    assert {"demo", "demokeys"} <= set(catalog.names())
