"""AES-256-GCM encryption of secrets at rest, with key ids so keys rotate without downtime.

A blob is a small document: {"v": 1, "kid": key id, "n": 96-bit random nonce, "ct": ciphertext+tag}. The
additional authenticated data binds a blob to its record and field (e.g. "account:apn_x:credentials"), so a
ciphertext copied to another account does not decrypt."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

BLOB_VERSION = 1
_KID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class KeyringError(Exception):
    """A blob cannot be decrypted (unknown key id, wrong key, tampering) or the key setting is bad."""


class Keyring:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise KeyringError("no encryption key configured (BROKER_ENCRYPTION_KEYS)")
        self._ciphers: dict[str, AESGCM] = {}
        for kid, key in keys:
            if not _KID.match(kid):
                raise KeyringError(f"key id {kid!r} must match {_KID.pattern}")
            if len(key) != 32:
                raise KeyringError(f"key {kid!r} must be 32 bytes (AES-256), got {len(key)}")
            if kid in self._ciphers:
                raise KeyringError(f"key id {kid!r} appears twice")
            self._ciphers[kid] = AESGCM(key)
        self.primary_kid = keys[0][0]

    @classmethod
    def from_setting(cls, raw: str) -> Keyring:
        """`kid:base64key,kid:base64key`; the first key encrypts, all of them decrypt."""
        keys: list[tuple[str, bytes]] = []
        for item in filter(None, (part.strip() for part in raw.split(","))):
            kid, sep, encoded = item.partition(":")
            if not sep:
                raise KeyringError("each key must be written kid:base64key")
            try:
                keys.append((kid, base64.b64decode(encoded, validate=True)))
            except binascii.Error:
                raise KeyringError(f"key {kid!r} is not valid base64") from None
        return cls(keys)

    @staticmethod
    def generate_key() -> str:
        return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    def encrypt(self, plaintext: bytes, aad: str) -> dict[str, Any]:
        nonce = os.urandom(12)
        ciphertext = self._ciphers[self.primary_kid].encrypt(nonce, plaintext, aad.encode())
        return {"v": BLOB_VERSION, "kid": self.primary_kid, "n": nonce, "ct": ciphertext}

    def decrypt(self, blob: Mapping[str, Any], aad: str) -> bytes:
        kid = blob.get("kid")
        if blob.get("v") != BLOB_VERSION or not isinstance(kid, str):
            raise KeyringError("not an encrypted blob of a known version")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise KeyringError(f"blob was encrypted with key {kid!r}, which is not configured")
        try:
            return cipher.decrypt(bytes(blob["n"]), bytes(blob["ct"]), aad.encode())
        except (InvalidTag, KeyError, TypeError, ValueError):
            raise KeyringError(
                f"blob does not decrypt with key {kid!r} (wrong key or tampered data)"
            ) from None

    def encrypt_json(self, value: Mapping[str, Any], aad: str) -> dict[str, Any]:
        return self.encrypt(json.dumps(value, separators=(",", ":")).encode(), aad)

    def decrypt_json(self, blob: Mapping[str, Any], aad: str) -> dict[str, Any]:
        value = json.loads(self.decrypt(blob, aad))
        if not isinstance(value, dict):
            raise KeyringError("decrypted value is not an object")
        return value

    def needs_rotation(self, blob: Mapping[str, Any]) -> bool:
        return blob.get("kid") != self.primary_kid
