"""AES-256-GCM blobs: key ids, fresh nonces, additional data binding, clear errors."""

from __future__ import annotations

import base64

import pytest

from service.store.keyring import Keyring, KeyringError

KEY_A = base64.b64encode(b"A" * 32).decode()
KEY_B = base64.b64encode(b"B" * 32).decode()


def test_round_trip_and_key_id_in_every_blob() -> None:
    keyring = Keyring.from_setting(f"a:{KEY_A}")
    blob = keyring.encrypt(b"secret", "account:x:credentials")
    assert blob["kid"] == "a"
    assert b"secret" not in blob["ct"]
    assert keyring.decrypt(blob, "account:x:credentials") == b"secret"


def test_every_write_uses_a_fresh_nonce() -> None:
    keyring = Keyring.from_setting(f"a:{KEY_A}")
    first, second = (keyring.encrypt(b"same", "aad") for _ in range(2))
    assert first["n"] != second["n"]
    assert first["ct"] != second["ct"]


def test_a_blob_does_not_decrypt_for_another_record() -> None:
    keyring = Keyring.from_setting(f"a:{KEY_A}")
    blob = keyring.encrypt(b"secret", "account:one:credentials")
    with pytest.raises(KeyringError, match="wrong key or tampered"):
        keyring.decrypt(blob, "account:two:credentials")


def test_first_key_encrypts_and_older_keys_still_decrypt() -> None:
    old = Keyring.from_setting(f"a:{KEY_A}")
    blob = old.encrypt(b"secret", "aad")
    rotated = Keyring.from_setting(f"b:{KEY_B},a:{KEY_A}")
    assert rotated.decrypt(blob, "aad") == b"secret"
    assert rotated.needs_rotation(blob)
    assert rotated.encrypt(b"x", "aad")["kid"] == "b"


def test_unknown_key_id_is_a_clear_error() -> None:
    blob = Keyring.from_setting(f"a:{KEY_A}").encrypt(b"secret", "aad")
    with pytest.raises(KeyringError, match="key 'a', which is not configured"):
        Keyring.from_setting(f"b:{KEY_B}").decrypt(blob, "aad")


def test_same_key_id_with_a_different_key_is_a_clear_error_not_garbage() -> None:
    blob = Keyring.from_setting(f"a:{KEY_A}").encrypt(b"secret", "aad")
    with pytest.raises(KeyringError, match="does not decrypt with key 'a'"):
        Keyring.from_setting(f"a:{KEY_B}").decrypt(blob, "aad")


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("", "no encryption key"),
        ("nokid", "kid:base64key"),
        ("a:not-base64!!", "not valid base64"),
        (f"a:{base64.b64encode(b'short').decode()}", "32 bytes"),
        (f"a:{KEY_A},a:{KEY_B}", "appears twice"),
        (f"bad id:{KEY_A}", "must match"),
    ],
)
def test_bad_key_settings_are_refused(setting: str, problem: str) -> None:
    with pytest.raises(KeyringError, match=problem):
        Keyring.from_setting(setting)
