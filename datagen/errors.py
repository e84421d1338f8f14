"""The project's exceptions, one small hierarchy.

Third-party errors are translated at the layer that owns them, keeping the cause
(``raise LLMTimeout(msg) from exc``); nothing above ``datagen.llm`` catches ``openai.*``.

    DatagenError                  exit code 1 unless a subclass says otherwise
    ├── UserError                 exit code 2: something the user can fix in what they gave us
    │   ├── ConfigError           a bad flag, config key or value
    │   ├── RecordError           a bad input file or line (message starts with ``path:line:``)
    │   └── TemplateError         a prompt template that is missing or does not render
    └── LLMError                  the endpoint failed past the retry budget
        ├── LLMTimeout            no answer within the per-request timeout
        ├── LLMRateLimited        429 past the retry budget
        ├── LLMConnectionError    could not connect, or the connection was reset
        ├── LLMServerError        5xx past the retry budget
        ├── LLMBadResponse        an answer that is not a valid completion (malformed JSON, no choices)
        └── LLMRequestError       4xx other than 408/409/429: retrying cannot help (bad model name, auth)
"""

from __future__ import annotations


class DatagenWarning(UserWarning):
    """Warnings we raise ourselves; the test suite turns them into errors."""


class DatagenError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1
    label = "error"  # how the command line introduces the message


class UserError(DatagenError):
    """Something the user can fix in what they gave us: exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """A bad option, config key or config value."""


class RecordError(UserError):
    """A bad input file or line; the message names ``path:line``."""


class TemplateError(UserError):
    """A prompt template that is missing or fails to render."""


class LLMError(DatagenError):
    """An LLM request that failed for good; ``reason`` is a short machine-readable tag."""

    reason = "error"

    def __init__(self, message: str, *, status: int | None = None, attempts: int | None = None):
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class LLMTimeout(LLMError):
    reason = "timeout"


class LLMRateLimited(LLMError):
    reason = "rate_limited"


class LLMConnectionError(LLMError):
    reason = "connection"


class LLMServerError(LLMError):
    reason = "server_error"


class LLMBadResponse(LLMError):
    reason = "bad_response"


class LLMRequestError(LLMError):
    reason = "request_error"


class CircuitOpen(LLMError):
    """The endpoint has failed continuously for longer than the configured window: stop the run."""

    reason = "circuit_open"
