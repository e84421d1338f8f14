"""Scrubbing secrets out of what the program writes or logs: the one helper every writer and logger uses.

API keys come from the environment and never enter a config, but a user may still put credentials into a base
URL (``https://user:key@host/v1``) or its query (``?api_key=...``). Such a URL travels into stats.json,
manifest.json, the report, log lines and error messages, so each of those passes through ``redact_text`` (or
``redact_url`` for a bare URL): the userinfo and the values of secret-looking query parameters become ``***``.
The URL that is *used* is left as it is; only what is shown changes.

    >>> redact_url("https://bob:sk-123@api.example.com/v1?api-key=abc&x=1")
    'https://***@api.example.com/v1?api-key=***&x=1'
    >>> redact_text("connection to http://u:p@127.0.0.1:9/v1 failed", secrets=("p",))
    'connection to http://***@127.0.0.1:9/v1 failed'
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

#: Words that mark a config key or a URL query parameter as secret (``api_key``, ``X-Auth-Token``, ``sig``).
SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "auth", "credential", "signature", "sig")
#: Environment variables whose values are secrets wherever they show up.
SECRET_ENV = ("DATAGEN_API_KEY", "OPENAI_API_KEY")

_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#@'\"<>]*@)?(?P<rest>[^\s'\"<>]*)")
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;][^=&;#\s'\"]*(?:" + "|".join(SECRET_WORDS) + r")[^=&;#\s'\"]*=)"
    r"(?P<value>[^&;#\s'\"]*)",
    re.IGNORECASE,
)


def is_secret_name(name: object) -> bool:
    """Whether a config key or parameter name looks like it holds a secret (``api_key``, ``password``)."""
    lowered = str(name).lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact_url(url: str) -> str:
    """``url`` with its userinfo and secret query values replaced by ``***`` (anything else is unchanged)."""
    return _URL.sub(_redact_match, url)


def _redact_match(match: re.Match[str]) -> str:
    userinfo = "***@" if match.group("userinfo") else ""
    rest = _SECRET_PARAM.sub(lambda m: m.group("name") + ("***" if m.group("value") else ""), match.group("rest"))
    return match.group("scheme") + userinfo + rest


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Free text (an error, a log line) with URL credentials and the given secret values (and the API keys in
    the environment) replaced by ``***``."""
    if not isinstance(text, str):
        return text
    for secret in (*secrets, *(os.environ.get(name) for name in SECRET_ENV)):
        if secret and len(secret) >= 3:  # a one-letter "secret" would blank out every word holding it
            text = text.replace(secret, "***")
    return redact_url(text) if "://" in text else text


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record's final message through ``redact_text``: attach it to a
    handler and nothing that handler prints can carry a URL credential or an API key."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
