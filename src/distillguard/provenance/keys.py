"""Watermark keys derived per campaign or account cluster from one provider secret.

One secret, many keys: HMAC-SHA256(secret, key_id) gives each harvested stream its own
green lists, so a later hit names *which* stream the suspect learned from, and the
provider only has to guard (and, for a third party, reveal) one key per accusation.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from distillguard.errors import InputError

#: Domain-separation label: keys for other purposes never collide with watermark keys.
_LABEL = b"distillguard/provenance/watermark/v1\x00"
#: transformers multiplies the key with int64 tensors (selfhash), so it must stay < 2**63.
_KEY_BITS = 62


@dataclass(frozen=True)
class WatermarkKey:
    """A key id (e.g. ``campaign:c-0042``) and the integer hashing key it derives to."""

    key_id: str
    hashing_key: int


def derive_key(secret: bytes, key_id: str) -> WatermarkKey:
    """Derive the hashing key for `key_id`; deterministic, and infeasible to invert."""
    if not secret:
        raise InputError("the provider secret is empty")
    if not key_id.strip():
        raise InputError("the key id is empty")
    digest = hmac.new(secret, _LABEL + key_id.encode("utf-8"), hashlib.sha256).digest()
    value = int.from_bytes(digest[:8], "big") >> (64 - _KEY_BITS)
    return WatermarkKey(key_id=key_id, hashing_key=value or 1)


def campaign_key_id(campaign_id: str) -> str:
    """The key id convention for a detected campaign."""
    return f"campaign:{campaign_id}"


def cluster_key_id(cluster_id: str) -> str:
    """The key id convention for an account cluster not (yet) promoted to a campaign."""
    return f"cluster:{cluster_id}"


def campaign_of(key_id: str) -> str | None:
    """The campaign a key id names, or None for cluster or free-form keys."""
    prefix = "campaign:"
    return key_id[len(prefix):] if key_id.startswith(prefix) else None


def load_secret(secret_file: Path | None, env_var: str) -> bytes:
    """The provider secret from a file (preferred) or an environment variable."""
    if secret_file is not None:
        try:
            data = Path(secret_file).read_bytes().strip()
        except FileNotFoundError as exc:
            raise InputError("secret file not found", file=str(secret_file)) from exc
        if not data:
            raise InputError("secret file is empty", file=str(secret_file))
        return data
    value = os.environ.get(env_var, "")
    if not value:
        raise InputError(f"no provider secret: pass --secret-file or set ${env_var}")
    return value.encode("utf-8")
