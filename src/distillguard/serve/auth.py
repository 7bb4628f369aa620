"""Bearer-token auth for the service: one shared secret, no default, constant-time checks.

The token comes from `--token-file` or the `DISTILLGUARD_TOKEN` environment variable;
without one the service refuses to start. Requests carry it as `Authorization: Bearer`
(gateways, scripts) or, after the dashboard's login form, in an HttpOnly cookie.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from distillguard.errors import InputError

TOKEN_ENV = "DISTILLGUARD_TOKEN"
MIN_TOKEN_CHARS = 16


def load_token(token_file: Path | None = None) -> str:
    """The configured token; an InputError (exit 2) when there is none or it is too short."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text("utf-8").strip()
        except OSError as exc:
            raise InputError(f"cannot read token file: {exc.strerror}",
                             file=str(token_file)) from None
        where = f"token file {token_file}"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        where = f"${TOKEN_ENV}"
        if not token:
            raise InputError(f"no API token: set {TOKEN_ENV} or pass --token-file "
                             "(the service never runs without one)")
    if len(token) < MIN_TOKEN_CHARS:
        raise InputError(f"the API token in {where} is shorter than {MIN_TOKEN_CHARS} "
                         "characters")
    return token


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison (a timing side channel must not reveal the token)."""
    if not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if that is what it is."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None
