"""Keyed hashing of identifying values, and snippet scrubbing, for the outputs.

Why keyed: a plain hash of an IPv4 address is reversed by hashing all 2^32 addresses;
an HMAC is not without the key. Two providers who share the key can still match
indicators (the same value gives the same token), so redacted outputs stay usable.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path

from distillguard.errors import InputError

KEY_ENV = "DISTILLGUARD_REDACT_KEY"
MIN_KEY_BYTES = 16
TOKEN_PREFIX = "hmac:"
TOKEN_HEX = 16  # 64 bits of the HMAC: collisions among a run's indicators are negligible.

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:/\d{1,3})?(?![\w:])")
_EMAIL = re.compile(r"\b[\w.+-]+@((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})\b")
_URL = re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def load_key(key_file: Path | None = None, *, environ: dict[str, str] | None = None) -> bytes:
    """The redaction key from a file (preferred) or the environment; an error if neither."""
    env = os.environ if environ is None else environ
    if key_file is not None:
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise InputError(f"cannot read redaction key: {exc.strerror}",
                             file=str(key_file)) from exc
        source = str(key_file)
    elif env.get(KEY_ENV):
        key, source = env[KEY_ENV].strip().encode("utf-8"), f"${KEY_ENV}"
    else:
        raise InputError(f"--redact needs a key: pass --redact-key-file FILE or set {KEY_ENV}")
    if len(key) < MIN_KEY_BYTES:
        raise InputError(f"redaction key from {source} is shorter than {MIN_KEY_BYTES} bytes")
    return key


def scrub_snippet(text: str | None, max_chars: int) -> str:
    """A prompt example fit to show: URLs, e-mail addresses and IPs masked, whitespace
    collapsed, truncated. Applied with or without --redact (prompts are user data)."""
    if not text:
        return ""
    out = _URL.sub("<url>", text)
    out = _EMAIL.sub("<email>", out)
    out = _IPV4.sub(lambda m: "<ip>" if _is_ip(m.group(0)) else m.group(0), out)
    out = _IPV6.sub(lambda m: "<ip>" if _is_ip(m.group(0)) else m.group(0), out)
    out = _SPACE.sub(" ", out).strip()
    return out if len(out) <= max_chars else out[: max_chars - 1].rstrip() + "…"


class Redactor:
    """Replaces IPs, CIDRs, e-mail domains and payment fingerprints by keyed tokens.

    Without a key it is the identity, so writers call it unconditionally.
    """

    def __init__(self, key: bytes | None, known: Iterable[str] = ()) -> None:
        self.key = key
        values = sorted({v for v in known if v}, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, values))) if key and values else None

    @property
    def active(self) -> bool:
        return self.key is not None

    def value(self, value: str) -> str:
        """One identifying value as a token (a CIDR is hashed as the whole string)."""
        if self.key is None:
            return value
        digest = hmac.new(self.key, value.encode("utf-8"), hashlib.sha256).hexdigest()
        return TOKEN_PREFIX + digest[:TOKEN_HEX]

    def values(self, values: Iterable[str]) -> list[str]:
        return [self.value(v) for v in values]

    def text(self, text: str | None) -> str | None:
        """Free text with every known value, IP address and e-mail domain tokenised."""
        if self.key is None or not text:
            return text
        out = self._known.sub(lambda m: self.value(m.group(0)), text) if self._known else text
        out = _EMAIL.sub(lambda m: m.group(0).replace(m.group(1), self.value(m.group(1))), out)
        for pattern in (_IPV4, _IPV6):
            out = pattern.sub(
                lambda m: self.value(m.group(0)) if _is_ip(m.group(0)) else m.group(0), out
            )
        return out
