"""Session tokens (the storefront's, the dashboard's): `<prefix><tenant id>_<64 hex>`, stored
only as their SHA-256. The random part is hex (no "_"), so a token splits at its last "_"."""

import hashlib
import secrets

MAX_TOKEN_CHARS = 200


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str, tenant_id: str) -> str:
    return f"{prefix}{tenant_id}_{secrets.token_hex(32)}"


def token_tenant(prefix: str, token: str) -> str | None:
    """The tenant id a session token names, or None if it is not one."""
    if not token.startswith(prefix) or len(token) > MAX_TOKEN_CHARS:
        return None
    tenant_id, _, secret = token[len(prefix) :].rpartition("_")
    if not tenant_id or len(tenant_id) > 40 or len(secret) != 64 or not secret.isalnum():
        return None
    if not tenant_id.isascii() or not tenant_id.replace("_", "").isalnum():
        return None
    return tenant_id
