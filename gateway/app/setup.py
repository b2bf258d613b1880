"""The set-up commands' local side: the webhook URL to register and the file that keeps Ringside's signing secret.

What the commands ask of Stripe and Ringside lives in gateway/adapters/stripe/setup.py and
gateway/adapters/ringside/registration.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gateway.domain.errors import SetupError

__all__ = ["SetupError", "check_secret_file", "webhook_url", "write_secret_file"]

WEBHOOK_PATH = "/webhooks/ringside"


def webhook_url(url: str) -> str:
    """The gateway's webhook URL: `url` itself, or `url` + /webhooks/ringside when it names only a host."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SetupError(f"--url must be an http(s) URL such as https://billing.example.com, not {url!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path=WEBHOOK_PATH)
    return urlunsplit(parts)


def check_secret_file(path: Path) -> None:
    """Fail before registering, so that a secret shown once is never lost to an unwritable path."""
    if path.exists():
        raise SetupError(f"{path} already exists: refusing to overwrite a signing secret; choose another path")
    if not path.parent.is_dir():
        raise SetupError(f"{path.parent} is not a directory")
    if not os.access(path.parent, os.W_OK):
        raise SetupError(f"{path.parent} is not writable")


def write_secret_file(path: Path, secret: str) -> None:
    """Write `secret` to a new file readable by its owner only (mode 0600), durably.

    O_EXCL: never replaces a file (a live secret could be in it). The mode is given at creation, so the secret is
    never readable by others, not even for an instant, and set again with fchmod in case a umask narrowed it.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        # No trailing newline: a file read verbatim (a container secret) would otherwise carry it into the secret.
        os.write(fd, secret.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
