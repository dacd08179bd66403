"""Who is calling: API key (Bearer or X-API-Key) -> Caller, loopback operator, rate limits.

One function, `resolve_caller`, decides for every transport (REST, OpenAI-compatible, MCP over HTTP,
the UI sign-in): the REST dependency, the MCP middleware and the Gradio auth callback all call it.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from dataclasses import dataclass
from typing import Mapping

from rag.access import Caller
from rag.server.errors import ApiError
from rag.server.keys import KeyStore


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and the test client's "testclient" pseudo-host."""
    if not host:
        return False
    if host in ("localhost", "testclient"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The API key a request carries: `Authorization: Bearer KEY` or `X-API-Key: KEY`."""
    auth = headers.get("authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


@dataclass
class TokenBucket:
    """`rate` tokens per second up to `burst`; one token per request."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """A token bucket per caller name (per key); rate <= 0 turns limiting off."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate = rate_per_s
        self.burst = max(1.0, burst)
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def check(self, name: str) -> None:
        """Raise a 429 ApiError when `name` has used its budget."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                bucket = self._buckets[name] = TokenBucket(self.rate, self.burst, self.burst, now)
            wait = bucket.take(now)
        if wait > 0:
            raise ApiError(429, "rate_limited", f"too many requests for this key; retry in {math.ceil(wait)} s",
                           headers={"Retry-After": str(math.ceil(wait))})


class Authenticator:
    """Maps a request's key and client address to a Caller (see module docstring)."""

    def __init__(self, keys: KeyStore, default_labels: list[str], insecure: bool = False,
                 limiter: RateLimiter | None = None) -> None:
        self.keys = keys
        self.default_labels = list(default_labels)
        self.insecure = insecure
        self.limiter = limiter

    def resolve_caller(self, headers: Mapping[str, str], client_host: str | None) -> Caller:
        """The request's Caller, or ApiError 401 (no/invalid/revoked key, or no key from a non-loopback host)."""
        key = key_from_headers(headers)
        if key is not None:
            caller = self.keys.authenticate(key)
            if caller is None:
                # Never echo the key: not in the message, not in logs.
                raise ApiError(401, "invalid_api_key", "the API key is unknown or revoked", field="authorization",
                               headers={"WWW-Authenticate": "Bearer"})
        elif self.keys.any_active():
            raise ApiError(401, "missing_api_key", "this server requires an API key: send 'Authorization: Bearer "
                           "KEY' or 'X-API-Key: KEY' (an admin creates one with: rag keys create NAME --acl LABEL)",
                           field="authorization", headers={"WWW-Authenticate": "Bearer"})
        elif is_loopback(client_host) or self.insecure:
            caller = Caller.local(self.default_labels)
        else:
            raise ApiError(401, "missing_api_key", "no API keys are configured, so this server only answers "
                           "requests from this machine (loopback); create a key with: rag keys create NAME "
                           "--acl LABEL --role reader", field="authorization",
                           headers={"WWW-Authenticate": "Bearer"})
        if self.limiter is not None:
            self.limiter.check(caller.name)
        return caller
