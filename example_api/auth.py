"""Signed bearer tokens naming the acting user: how the example shows authorization.

Not a product: one shared secret (``EXAMPLE_API_AUTH_SECRET``), one kind of
token, no revocation. With the secret set, every mutation needs
``Authorization: Bearer <token>`` and acts as the token's user, and a user's
``email`` is visible to that user only. Without it (the default of ``make
run``) the example runs open, and its start-up log says so.

A token is ``<user id>.<expiry, unix seconds>.<signature>``, the signature an
HMAC-SHA256 of the first two parts under the secret (base64url, unpadded).
``python -m example_api token USER_ID`` prints one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

__all__ = ["DEFAULT_TTL_SECONDS", "TokenError", "issue", "verify"]

DEFAULT_TTL_SECONDS = 24 * 3600
"""How long a token issued by :func:`issue` is valid, by default: one day."""


class TokenError(Exception):
    """A bearer token that is malformed, expired or not signed with the secret."""


def _sign(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue(
    secret: str, user_id: int, *, ttl_seconds: int = DEFAULT_TTL_SECONDS, now: float | None = None
) -> str:
    """A token naming ``user_id``, valid for ``ttl_seconds``."""
    if not secret:
        raise ValueError("EXAMPLE_API_AUTH_SECRET is not set: there is nothing to sign with")
    if user_id <= 0:
        raise ValueError(f"user_id must be a positive id, got {user_id}")
    expires = int((time.time() if now is None else now) + ttl_seconds)
    payload = f"{user_id}.{expires}"
    return f"{payload}.{_sign(secret, payload)}"


def verify(secret: str, token: str, *, now: float | None = None) -> int:
    """The user id ``token`` names; :class:`TokenError` when it is not valid now."""
    parts = token.split(".")
    if len(parts) != 3 or not all(part.isascii() for part in parts) or len(token) > 200:
        raise TokenError("the bearer token is malformed")
    user, expires, signature = parts
    if not hmac.compare_digest(signature, _sign(secret, f"{user}.{expires}")):
        raise TokenError("the bearer token is not signed by this server")
    if not (user.isdigit() and expires.isdigit()):
        raise TokenError("the bearer token is malformed")
    if int(expires) < (time.time() if now is None else now):
        raise TokenError("the bearer token has expired")
    return int(user)
