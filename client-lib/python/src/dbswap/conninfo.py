"""libpq connection strings, masked for every string form.

A connection string holds a password: nothing in this package puts one
into a log line, a repr or an exception message.  mask_conninfo() is the
form to show ("postgresql://app:****@db/x", "host=db password=****"), by
the rules of libdbswap's dbswap_mask_conninfo() and the Node client's
maskConninfo(): what cannot be read is masked whole, since no one can say
which part of it is the password.  redact() cleans text that comes from
elsewhere (a driver's error) and may have picked a secret up.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

__all__ = ["mask_conninfo", "redact", "MASK"]

MASK = "****"

#: Keywords whose value is a secret.
SECRET_KEYS = frozenset(("password", "sslpassword", "oauth_client_secret",
                         "scram_client_key", "scram_server_key"))
_SCHEMES = ("postgresql://", "postgres://")
_BLANKS = " \t\n\v\f\r"


class _Unreadable(ValueError):
    pass


def _keyvalue_spans(s: str) -> list[tuple[str, int, int, str]]:
    """libpq's keyword/value form, read as libpq reads it (fe-connect.c
    conninfo_parse): [(keyword, value start, value end, value)], the spans
    as written (quotes included).  _Unreadable where libpq would fail."""
    out = []
    i, n = 0, len(s)
    while True:
        while i < n and s[i] in _BLANKS:
            i += 1
        if i >= n:
            return out
        start = i
        while i < n and s[i] != "=" and s[i] not in _BLANKS:
            i += 1
        key = s[start:i]
        while i < n and s[i] in _BLANKS:
            i += 1
        if i >= n or s[i] != "=" or not key:
            raise _Unreadable("missing =")
        i += 1
        while i < n and s[i] in _BLANKS:
            i += 1
        vstart = i
        value = []
        if i < n and s[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise _Unreadable("unterminated quote")
                c = s[i]
                if c == "\\" and i + 1 < n:
                    value.append(s[i + 1])
                    i += 2
                    continue
                i += 1
                if c == "'":
                    break
                value.append(c)
        else:
            while i < n and s[i] not in _BLANKS:
                if s[i] == "\\" and i + 1 < n:
                    value.append(s[i + 1])
                    i += 2
                    continue
                value.append(s[i])
                i += 1
        out.append((key, vstart, i, "".join(value)))


def _uri_parts(s: str, scheme: str):
    """A URI's password span (start, end) as written, or None, and its
    query's (key, start, end) spans."""
    rest_at = len(scheme)
    qpos = s.find("?", rest_at)
    head_end = len(s) if qpos < 0 else qpos
    # The last '@' before the query: a password may hold '@' and '/'
    # unencoded, and masking too much is the safe way to be wrong.
    at = s.rfind("@", rest_at, head_end)
    span = None
    if at >= 0:
        colon = s.find(":", rest_at, at)
        if colon >= 0:
            span = (colon + 1, at)
    params = []
    if qpos >= 0:
        pos = qpos + 1
        for item in s[qpos + 1:].split("&"):
            eq = item.find("=")
            if eq >= 0:
                params.append((unquote(item[:eq]), pos + eq + 1,
                               pos + len(item)))
            pos += len(item) + 1
    return span, params


def _secret_spans(s: str) -> list[tuple[int, int]]:
    for scheme in _SCHEMES:
        if s.startswith(scheme):
            span, params = _uri_parts(s, scheme)
            spans = [span] if span else []
            spans += [(a, b) for k, a, b in params if k in SECRET_KEYS]
            return spans
    if "=" not in s:
        raise _Unreadable("neither a URI nor keyword=value")
    return [(a, b) for k, a, b, _ in _keyvalue_spans(s) if k in SECRET_KEYS]


def mask_conninfo(conninfo: str | None) -> str:
    """The connection string with every password replaced by ****: the form
    for logs and messages.  Works on malformed strings too (masked whole)."""
    if conninfo is None:
        return "(none)"
    s = str(conninfo)
    if not s:
        return ""
    try:
        spans = _secret_spans(s)
    except _Unreadable:
        return MASK
    out = []
    last = 0
    for a, b in sorted(spans):
        out.append(s[last:a])
        out.append(MASK)
        last = b
    out.append(s[last:])
    return "".join(out)


def _secrets(s: str) -> set[str]:
    """The secret values of s, as written and as decoded."""
    found: set[str] = set()
    try:
        for scheme in _SCHEMES:
            if s.startswith(scheme):
                span, params = _uri_parts(s, scheme)
                spans = ([span] if span else []) + \
                    [(a, b) for k, a, b in params if k in SECRET_KEYS]
                for a, b in spans:
                    found.add(s[a:b])
                    found.add(unquote(s[a:b]))
                break
        else:
            for k, a, b, value in _keyvalue_spans(s):
                if k in SECRET_KEYS:
                    found.update((s[a:b], value))
    except _Unreadable:
        pass
    out = set()
    for v in found:
        if v.strip():  # blanks alone are no secret to look for
            out.add(v)
            out.add(quote(v, safe=""))
    return out


def redact(text: str, conninfo: str | None) -> str:
    """text with the connection string and its secrets replaced by their
    masked forms."""
    text = str(text)
    if not conninfo:
        return text
    out = text.replace(conninfo, mask_conninfo(conninfo))
    # The longest first: a secret may contain a shorter one.
    for secret in sorted(_secrets(conninfo), key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out
