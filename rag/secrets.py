"""Secret redaction: the one function every log line, error, settings dump and answer JSON goes through.

What counts as a secret:
- credentials in URLs (`http://user:password@host/v1` -> `http://***@host/v1`);
- HTTP credentials echoed back by a server (`Basic dXNlcjpwYXNz`, `Bearer sk-...`);
- API-key-shaped tokens (`sk-...`, `sk-proj-...`) and `api_key=...` / `token=...` / `password=...` pairs;
- any value the caller knows is secret (the configured API keys, the parts of a URL's credentials and
  their Base64 `user:password` form), passed as `known`.
A mask never shows more than 4 characters of a secret.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from typing import Any, Iterable
from urllib.parse import unquote, urlsplit

MASK = "***"
# Shorter known secrets are not replaced: masking every "ab" in a message would garble it, and a
# 3-character secret is no secret.
_MIN_KNOWN_LEN = 4

# scheme://userinfo@host : userinfo is anything up to the last "@" before the host part.
_URL_USERINFO_RE = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@?#]+)@")
# "Basic <base64>" / "Bearer <token>" as a server echoes them; the value must look like a credential
# (a digit, "+/=", or an upper-case letter after the first), so prose like "Basic information" is kept.
_AUTH_HEADER_RE = re.compile(r"\b(?P<scheme>Basic|Bearer|basic|bearer|BASIC|BEARER)(?P<sep>\s+|=|:\s*)"
                             r"(?P<value>[A-Za-z0-9._~+/-]{6,}=*)")
# API-key-shaped tokens: OpenAI-style `sk-...`, and this product's own keys (`rag keys create`): rag_<8 hex>_<secret>.
_KEY_TOKEN_RE = re.compile(r"\b(?:(?:sk|rk|pk)-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{8,}|rag_[0-9a-f]{8}_[A-Za-z0-9_-]{20,})")
_KEY_VALUE_RE = re.compile(
    r"(?P<name>\b(?:api[_-]?key|apikey|access[_-]?token|auth[_-]?token|token|client[_-]?secret|password|passwd)\b"
    r"[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"'&,;}]{3,})",
    re.IGNORECASE,
)


def mask_key(key: str | None) -> str:
    """A display form of an API key showing at most its last 4 characters ("…abcd"); "" when unset."""
    if not key:
        return ""
    if len(key) < 12:  # too short to show any of it without giving most of it away
        return MASK
    return MASK + key[-4:]


def url_secrets(url: str | None) -> list[str]:
    """The secret parts of a URL's credentials: the password, user:password and Base64(user:password).

    The user name alone is left out: it is usually a common word ("user", "admin") and masking it
    everywhere would garble messages; URL-shaped occurrences are masked by `redact`'s pattern anyway.
    """
    if not url or "@" not in url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    out: list[str] = []
    user, password = parts.username, parts.password
    if password:
        out.extend({password, unquote(password)})
    if user is not None:
        pair = f"{unquote(user)}:{unquote(password or '')}"
        out.append(pair)
        out.append(base64.b64encode(pair.encode("utf-8")).decode("ascii"))
    return out


_registered: set[str] = set()
_registry_lock = threading.Lock()


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember secret values for every later `redact` call in this process (logs included).

    Components that hold a credential (the LLM answerer, a server store) register it when built, so
    a third-party library that logs it (httpx logs request URLs) is masked too.
    """
    with _registry_lock:
        _registered.update(v for v in values if v and len(v) >= _MIN_KNOWN_LEN)


def redact(text: object, known: Iterable[str | None] = ()) -> str:
    """`text` (stringified) with every secret it contains replaced by "***".

    `known` adds secrets the caller holds (API keys, URL credentials; see `url_secrets`) to those
    registered with `register_secrets`; longest first, so a key containing another is masked whole.
    Patterns catch the usual shapes even when nothing is known: URL credentials, Basic/Bearer values,
    `sk-...` keys and `api_key=...` pairs.
    """
    out = "" if text is None else str(text)
    if not out:
        return out
    with _registry_lock:
        candidates = set(_registered)
    candidates.update(s for s in known if s and len(s) >= _MIN_KNOWN_LEN)
    for secret in sorted(candidates, key=len, reverse=True):
        out = out.replace(secret, MASK)
    out = _URL_USERINFO_RE.sub(lambda m: m.group("scheme") + MASK + "@", out)
    out = _AUTH_HEADER_RE.sub(_mask_auth_value, out)
    out = _KEY_TOKEN_RE.sub(MASK, out)
    out = _KEY_VALUE_RE.sub(lambda m: m.group("name") + MASK if m.group("value") != MASK else m.group(0), out)
    return out


# Words that make a field's value secret wherever it appears (`llm_api_key`, `client_secret`, `password`).
_SECRET_KEY_WORDS = ("apikey", "api_key", "api-key", "password", "passwd", "secret", "credential", "authorization")


def is_secret_key(name: object) -> bool:
    """True for a field name whose value is a secret: `*api_key*`, `*password*`, `*secret*`, `*_token`...

    A name ending in the word "token" is secret (`access_token`); token counts and budgets are not
    (`chunk_tokens`, `evidence_token_budget`).
    """
    lowered = str(name).lower()
    return any(word in lowered for word in _SECRET_KEY_WORDS) or re.split(r"[^a-z0-9]+", lowered)[-1] == "token"


def redact_data(data: Any, known: Iterable[str | None] = ()) -> Any:
    """A JSON-like structure with secrets masked: the whole value of a secret-named key (when set), and
    every string through `redact`. Used for settings dumps and for eval results shown in the UI."""
    known = list(known)
    if isinstance(data, dict):
        return {k: (MASK if is_secret_key(k) and v not in (None, "", False) else redact_data(v, known))
                for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v, known) for v in data]
    if isinstance(data, str):
        return redact(data, known)
    return data


def _mask_auth_value(m: re.Match[str]) -> str:
    value = m.group("value")
    looks_secret = (any(c.isdigit() for c in value) or any(c in "+/=" for c in value)
                    or any(c.isupper() for c in value[1:]))
    return m.group("scheme") + m.group("sep") + MASK if looks_secret else m.group(0)


_factory_installed = False


def install_log_redaction() -> None:
    """Redact every log record of the process, ours and third-party libraries' alike (idempotent).

    Done with a log-record factory rather than a handler filter, so it holds for handlers added later
    (the CLI's, a server's, pytest's) and for records of libraries such as httpx that log request URLs.
    """
    global _factory_installed
    with _registry_lock:
        if _factory_installed:
            return
        _factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report, not ours
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return record

    logging.setLogRecordFactory(factory)
