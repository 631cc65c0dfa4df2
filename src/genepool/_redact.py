"""Hide the passwords of URLs in text that is shown: messages, logs, reprs.

:func:`redact_url` is the one place that knows how: every URL or message that genepool
shows passes through it. It works on any text, URL or not, parsable or not, so a
misspelt or unsupported URL (``postgress://u:secret@h/db``, ``mysql://...``) is hidden
as well as a good one. It never imports SQLAlchemy (a worker handed a SQLite store
never loads it).
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact_url", "shown", "url_secrets"]

#: What a hidden password reads as (as SQLAlchemy shows one).
MASK = "***"

# ``scheme://user:password@``: the password runs from the ':' after the user name to the
# next '@', as SQLAlchemy reads it (it may hold spaces, '/', '?' or quotes), within a line.
# Text that merely looks so ("http://host:8080/x ... me@example.org") is masked too.
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/]*:)(?P<secret>[^@\r\n]*)(?P<at>@)"
)

# ``password=...`` in a query string or a libpq ``key=value`` string: a key ending in
# ``password`` (``sslpassword``), or one of ``pass``, ``pwd``, ``secret``, ``token``, ...
# alone or after a separator (``client_secret``, not ``bypass``). A value ends at '&', '#'
# or white space; quotes or brackets just before the end are kept, not masked.
_SECRET_PARAM = re.compile(
    r"(?P<head>(?<![\w.\-])"
    r"(?:[\w.\-]*?passw(?:or)?d"
    r"|(?:[\w.\-]*[_.\-])?(?:pass|pwd|secret|token|api_?key|access_?key|credentials?))"
    r"=)"
    r"(?P<secret>'(?:[^'\\]|\\.)*'|[^&#\s]*?(?=['\")\]},;]*(?:[&#\s]|$)))",
    re.IGNORECASE,
)


def redact_url(text: str) -> str:
    """``text`` with every password in it replaced by ``***``.

    Masks the password of each ``scheme://user:password@host`` URL, and the value of each
    password-like parameter (``?password=``, ``&pass=``, ``pwd=``, ``secret=``,
    ``token=``, ``sslpassword=``, ...), in a URL or anywhere in a message. It errs on the
    side of hiding: text that only looks like a password is masked too.

    Example:
        >>> redact_url("postgresql://me:hunter2@db:5432/runs?sslmode=require&password=x")
        'postgresql://me:***@db:5432/runs?sslmode=require&password=***'
        >>> redact_url("Got 'postgress://me:hunter2@db/runs' instead.")
        "Got 'postgress://me:***@db/runs' instead."
    """
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['head']}{MASK}", text)


def url_secrets(url: str) -> list[str]:
    """The passwords :func:`redact_url` hides in ``url``: to hide them also where a library
    quotes them without their URL (``Invalid bucket name "key:secret@bucket"``).

    Example:
        >>> url_secrets("s3://key:hunter2@bucket/x?token=abc")
        ['hunter2', 'abc']
    """
    found = [m["secret"] for m in _USERINFO.finditer(url)]
    found += [m["secret"] for m in _SECRET_PARAM.finditer(url)]
    return [secret for secret in found if secret]


def shown(value: object, limit: int = 200) -> str:
    """A value as a message shows it: its ``repr`` with any URL password hidden, cut short
    past ``limit`` characters (a message never holds a megabyte of someone's list), and a
    placeholder where ``repr`` fails (a hostile ``__repr__``, an int of more digits than
    Python prints)."""
    try:
        text = redact_url(repr(value))
    except Exception:
        return f"<{type(value).__name__} object that cannot be shown>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"
