"""Credentials kept out of what is printed, logged to MLflow and written to disk: `redact(uri)`.

A tracking URI may carry a password (http://user:secret@host:5000, postgresql://user:pw@db) or a
token in its query (?token=..., presigned ?X-Amz-Signature=...). Written here on urllib.parse:
MLflow's own masking is private and covers a few query names only, and SQLAlchemy's
`render_as_string(hide_password=True)` knows database URLs only and rewrites the rest of them.
The connection itself always uses the real URI; only copies meant for people go through here.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

MASK = "***"
# Query keys whose values are credentials: token, access_token, api_key, apikey, X-Amz-Signature,
# X-Amz-Credential, X-Amz-Security-Token, sig (Azure SAS), password, secret, auth, session...
SECRET_KEY = re.compile(
    r"token|secret|passw|pwd|key|sig|auth|credential|session|cookie|jwt", re.IGNORECASE
)


def redact(uri: str) -> str:
    """`uri` with its password and token-like query values replaced by ***; any other string,
    and a URI without credentials, comes back unchanged."""
    if not isinstance(uri, str) or "://" not in uri:
        return uri
    try:
        parts = urllib.parse.urlsplit(uri)
        password = parts.password
    except ValueError:  # not parseable (a bad port, an unclosed [): show nothing after the scheme
        return f"{uri.partition('://')[0]}://{MASK}"
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{host}"
    query = "&".join(_redact_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    if (netloc, query) == (parts.netloc, parts.query):
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _redact_pair(pair: str) -> str:
    key, equals, value = pair.partition("=")
    if equals and value and SECRET_KEY.search(urllib.parse.unquote_plus(key)):
        return f"{key}={MASK}"
    return pair


def redact_tree(value: Any) -> Any:
    """A copy of nested dicts/lists/tuples with every string in it through `redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_tree(v) for v in value)
    return value


def scrub(text: str, uri: str) -> str:
    """`text` (an error message that may quote `uri`, or parts of it) with `uri`'s secrets
    masked: the URI itself, its password and its secret query values."""
    public = redact(uri)
    if public == uri:
        return text
    text = text.replace(uri, public)
    try:
        parts = urllib.parse.urlsplit(uri)
        password = parts.password or ""
        secrets = [password, urllib.parse.unquote(password)]
    except ValueError:
        return text.replace(uri.partition("://")[2], MASK)
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        if value and SECRET_KEY.search(urllib.parse.unquote_plus(key)):
            secrets += [value, urllib.parse.unquote_plus(value)]
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def public_config(config: Any) -> Any:
    """A config model with every string value through `redact` (the one itself when nothing
    needed masking): for the copies logged as artifacts or written beside a run."""
    dumped = config.model_dump(mode="json", by_alias=True)
    public = redact_tree(dumped)
    return config if public == dumped else type(config).model_validate(public)
