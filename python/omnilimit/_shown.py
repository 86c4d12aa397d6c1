"""What omnilimit echoes of values it was given: bounded, escaped, and without credentials.

A configuration file may be written to hurt: a nine-level alias bomb whose ``repr`` runs to
gigabytes, a key with a newline that forges a ``warning:`` line in a report, a lone surrogate that
a terminal cannot encode, a Redis URL with a password. Every message, log line and report that
shows such a value goes through here.
"""

from __future__ import annotations

import re
import reprlib

_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxstring = 80
_REPR.maxother = 80
_REPR.maxlong = 40
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = 5

# scheme://user:password@  and  ...?password=secret (redis-py reads both)
_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<user>[^\s:@/?#'\"]*):[^\s@/?#'\"]*@", re.IGNORECASE)
_PASSWORD_PARAMETER = re.compile(r"(?P<name>\bpassword=)[^\s&#'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the passwords of the URLs in it replaced by ``***`` (``redis://:***@host``,
    ``?password=***``). Works on any text, a malformed URL included."""
    text = _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _PASSWORD_PARAMETER.sub(lambda m: f"{m['name']}***", text)


def shown(value: object) -> str:
    """``value`` as a message shows it: its ``repr``, cut short (strings at 80 characters,
    collections at 5 items and 2 levels, so a huge, deep or self-referencing value prints in a few
    hundred characters), with passwords redacted."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a repr that fails (an int of more than 4,300 digits) names the type instead
        text = f"<{type(value).__name__}>"
    return redact(text)


def printable(text: str) -> str:
    """``text`` safe for one line of a terminal: control characters (a newline could forge a line),
    lone surrogates (which no terminal can encode) and other unprintable characters escaped as
    ``\\n``, ``\\ud800``..."""
    if text.isprintable():  # surrogates are not printable either
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
