"""AES-256-GCM sealing of secret values, and the key each sealed store reads at start.

A sealed value is `NSV1 | nonce (12 bytes) | ciphertext + tag`; the secret's name is the
associated data, so a value copied under another name does not open. The key is 32 bytes,
written as base64 or hex, from (first that applies):

1. metadata `keyFile` (a path) or `keyEnv` (an environment variable name);
2. the environment variable `NATRIUM_SECRETS_KEY`;
3. the file `~/.natrium/secrets.key`, created with a new random key (mode 0600) when absent.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kernel.components import Component
from kernel.errors import Codes, NatriumError

__all__ = ["KEY_ENV", "Sealer", "UnsealError", "default_key_file", "load_key", "parse_key"]

log = logging.getLogger("natrium.secrets")

KEY_ENV = "NATRIUM_SECRETS_KEY"
KEY_BYTES = 32
_MAGIC = b"NSV1"
_NONCE = 12
_TAG = 16
_AAD = b"natrium.secret.v1\x00"


def default_key_file() -> Path:
    return Path.home() / ".natrium" / "secrets.key"


class UnsealError(Exception):
    """A sealed value did not open: wrong key, altered bytes, or another secret's value."""


class Sealer:
    """Seals and opens values with one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, name: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE)  # random 96-bit nonces: safe far beyond any secret store's write count
        return _MAGIC + nonce + self._aead.encrypt(nonce, plaintext, _AAD + name.encode("utf-8"))

    def unseal(self, name: str, sealed: bytes) -> bytes:
        if not sealed.startswith(_MAGIC) or len(sealed) < len(_MAGIC) + _NONCE + _TAG:
            raise UnsealError("the stored value is not a natrium sealed value")
        nonce = sealed[len(_MAGIC) : len(_MAGIC) + _NONCE]
        try:
            return self._aead.decrypt(nonce, sealed[len(_MAGIC) + _NONCE :], _AAD + name.encode("utf-8"))
        except InvalidTag:
            raise UnsealError(
                "cannot unseal: the store's key is not the one this value was sealed with "
                "(or the value was altered or copied from another secret)"
            ) from None


def parse_key(text: str) -> bytes:
    """32 bytes from base64 (standard or URL-safe) or hex; the message never contains the key."""
    raw = text.strip()
    if len(raw) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(raw)
        except ValueError:
            pass
    try:
        key = base64.b64decode(raw.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"not a {KEY_BYTES}-byte key in base64 (44 characters) or hex (64 characters)") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"the key is {len(key)} bytes; it must be {KEY_BYTES} (base64 or hex)")
    return key


def load_key(component: Component) -> bytes:
    """The component's key, or ERR_COMPONENT_INVALID naming the component and where it looked."""
    where = f"component {component.name!r} ({component.source})"
    key_file, key_env = component.meta("keyFile"), component.meta("keyEnv")
    if key_file and key_env:
        raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: give keyFile or keyEnv, not both")
    if key_file:
        return _from_file(Path(key_file).expanduser(), where, "keyFile")
    if key_env:
        return _from_env(key_env, where, "keyEnv")
    if os.environ.get(KEY_ENV):
        return _from_env(KEY_ENV, where, "default key variable")
    path = default_key_file()
    if not path.exists():
        _create_key_file(path, where)
    return _from_file(path, where, "default key file")


def _from_env(variable: str, where: str, what: str) -> bytes:
    value = os.environ.get(variable)
    if not value:
        raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: environment variable {variable} ({what}) is not set")
    try:
        return parse_key(value)
    except ValueError as exc:
        raise NatriumError(
            Codes.COMPONENT_INVALID, f"{where}: environment variable {variable} ({what}): {exc}"
        ) from None


def _from_file(path: Path, where: str, what: str) -> bytes:
    try:
        text = path.read_text(encoding="ascii")
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: {what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: cannot read {what} {path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secrets key file is readable by others; chmod 600 it", extra={"path": str(path)})
    try:
        return parse_key(text)
    except ValueError as exc:
        raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: {what} {path}: {exc}") from None


def _create_key_file(path: Path, where: str) -> None:
    """Write a new random key, atomically: replicas starting together end up with one key."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")
        try:
            os.link(tmp, path)  # fails if another process created the file first: use theirs
            log.warning("created a new secrets key; back it up, sealed secrets die with it", extra={"path": str(path)})
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    except OSError as exc:
        raise NatriumError(
            Codes.COMPONENT_INVALID, f"{where}: cannot create the default key file {path}: {exc}"
        ) from None
