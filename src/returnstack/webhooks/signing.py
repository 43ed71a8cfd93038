"""Signatures of the Standard Webhooks specification, made with its reference library."""

import base64
import secrets
from datetime import datetime
from functools import lru_cache

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """whsec_ + 32 random bytes in base64 (what the library and receivers expect)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature_header(
    *, secrets_in_use: list[str], message_id: str, timestamp: datetime, body: bytes
) -> str:
    """`v1,<sig>` for each secret, space separated: the new one first during a rotation."""
    return " ".join(
        _signer(secret).sign(msg_id=message_id, timestamp=timestamp, data=body)
        for secret in secrets_in_use
    )


@lru_cache(maxsize=1024)
def _signer(secret: str) -> Webhook:
    """The library's signer of a secret (it decodes the key once, not per attempt)."""
    return Webhook(secret)
