"""The few HTML pages a browser sees: key forms, connection-settings forms, popup results, errors.
Every value is escaped; pages load nothing from elsewhere."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from html import escape

from aiohttp import web

from service.providers import Provider

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;background:#f4f5f7;margin:0;display:flex;
min-height:100vh;align-items:center;justify-content:center;color:#1f2937}
main{background:#fff;border-radius:12px;box-shadow:0 4px 24px rgba(0,0,0,.08);padding:2rem;width:24rem}
h1{font-size:1.25rem;margin:0 0 1rem}label{display:block;font-weight:600;font-size:.9rem;margin:.8rem 0 .3rem}
input{width:100%;box-sizing:border-box;padding:.55rem .7rem;border:1px solid #d1d5db;border-radius:8px}
button{margin-top:1.2rem;width:100%;padding:.65rem;border:0;border-radius:8px;background:#2563eb;color:#fff;
font-weight:600;cursor:pointer}p.err{color:#b91c1c}
code{background:#f3f4f6;padding:.1rem .3rem;border-radius:4px;word-break:break-all}
"""
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def page(title: str, body: str, status: int = 200) -> web.Response:
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style></head>'
        f"<body><main>{body}</main></body></html>"
    )
    return web.Response(text=html, content_type="text/html", status=status, headers=_HEADERS)


def error_page(code: str, message: str, status: int = 400) -> web.Response:
    body = (
        f"<h1>Could not connect the account</h1><p class=err>{escape(message)}</p>"
        f"<p>Code: <code>{escape(code)}</code></p>"
    )
    return page("Connection failed", body, status)


def _inputs(fields: Iterable[tuple[str, str, str, bool]]) -> str:
    return "".join(
        f'<label for="{escape(name)}">{escape(label)}</label>'
        f'<input id="{escape(name)}" name="{escape(name)}" type="{"password" if secret else "text"}" '
        f'value="{escape(value)}" required autocomplete="off">'
        for name, label, value, secret in fields
    )


def key_form(provider: Provider, token: str, error: str | None = None) -> web.Response:
    fields = [(f.name, f.label, "", f.secret) for f in provider.credential_fields]
    settings = [(s.name, s.label, s.default or "", False) for s in provider.connection_settings]
    body = (
        f"<h1>Connect {escape(provider.display_name)}</h1>"
        + (f"<p class=err>{escape(error)}</p>" if error else "")
        + f'<form method="post" action="/connect/{escape(provider.name)}">'
        + f'<input type="hidden" name="token" value="{escape(token)}">'
        + _inputs(settings + fields)
        + "<button type=submit>Connect</button></form>"
    )
    return page(f"Connect {provider.display_name}", body, 400 if error else 200)


def settings_form(
    provider: Provider, token: str, given: Mapping[str, str], error: str | None
) -> web.Response:
    fields = [
        (s.name, s.label, given.get(s.name, s.default or ""), False) for s in provider.connection_settings
    ]
    body = (
        f"<h1>Connect {escape(provider.display_name)}</h1>"
        + (f"<p class=err>{escape(error)}</p>" if error else "")
        + f'<form method="get" action="/connect/{escape(provider.name)}">'
        + f'<input type="hidden" name="token" value="{escape(token)}">'
        + _inputs(fields)
        + "<button type=submit>Continue</button></form>"
    )
    return page(f"Connect {provider.display_name}", body, 400 if error else 200)


def popup_result(target_origin: str, message: Mapping[str, str]) -> web.Response:
    """Posts the result to the window that opened the flow (only to the product's origin), then closes."""
    payload = json.dumps({"type": "oauth-broker", **message}).replace("<", "\\u003c")
    origin = json.dumps(target_origin).replace("<", "\\u003c")
    script = (
        f"<script>(function(){{var m={payload};if(window.opener){{window.opener.postMessage(m,{origin});}}"
        "window.close();})();</script>"
    )
    text = "Account connected." if message.get("status") == "success" else "Connection failed."
    return page("Connect", f"<h1>{escape(text)}</h1><p>You can close this window.</p>{script}")


def provider_list(providers: Iterable[Provider], token: str) -> web.Response:
    items = "".join(
        f'<li><a href="/connect/{escape(p.name)}?token={escape(token)}">{escape(p.display_name)}</a></li>'
        for p in providers
    )
    return page("Connect an account", f"<h1>Connect an account</h1><ul>{items}</ul>")


def landing_success(account_id: str, public_url: str) -> web.Response:
    curl = (
        f'curl -s -H "Authorization: Bearer $BROKER_API_KEY" '
        f'"{public_url}/v1/accounts/{account_id}?include_credentials=1"'
    )
    body = (
        "<h1>Account connected</h1>"
        f"<p>Account id: <code>{escape(account_id)}</code></p>"
        f"<p>Read its credential:</p><p><code>{escape(curl)}</code></p>"
    )
    return page("Account connected", body)
