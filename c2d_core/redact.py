"""Text that may reach a consumer: error reasons without URLs, keys or paths in them.

An exception's text can name an S3 endpoint, a host path or an RPC node's host:port (with an API key
in its URL); what a consumer sees says which error it was (its type) or is a sentence of our own.
"""

from __future__ import annotations

import re

# Anything with a scheme (http, https, s3, postgresql+psycopg2, ...), without a trailing full stop.
# The scheme is bounded (32 characters at most match): unbounded, a long run of letters makes the
# search quadratic, and a pod's log (c2d_core.live_logs) has lines of 64 KiB. A longer "scheme" still
# loses everything from its last 32 characters on, the host included.
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://\S*?(?=[.,;:]?(?:\s|$))")


def strip_urls(text: str, placeholder: str = "<url>") -> str:
    return URL.sub(placeholder, text)


def safe_reason(error: BaseException, sentences: tuple[type[BaseException], ...] = ()) -> str:
    """Why something failed, for a consumer: the text of our own errors (`sentences`, whose messages
    we write) with URLs cut out, else only the error's type name."""
    if sentences and isinstance(error, sentences):
        return strip_urls(str(error))
    return type(error).__name__
