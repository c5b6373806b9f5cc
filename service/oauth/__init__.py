"""The OAuth protocol: authorization URLs, callbacks, token exchange, refresh and revocation."""
