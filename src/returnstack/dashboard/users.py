"""Dashboard users and their sessions: argon2 password hashes, opaque session tokens that
name their tenant, a CSRF token per session. No FastAPI here: the CLI uses it too."""

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from returnstack.kit.errors import Conflict, NotFound, ValidationFailed
from returnstack.kit.ids import new_id
from returnstack.kit.tokens import hash_token, new_token, token_tenant
from returnstack.kit.types import normalize_email
from returnstack.models import DashboardSession, DashboardUser

ROLES = ("admin", "agent", "viewer")
MIN_PASSWORD = 12
MAX_PASSWORD = 1000
SESSION_HOURS = 12
TOKEN_PREFIX = "dss_"

_hasher = PasswordHasher()
# Verified when the email is unknown, so a wrong email costs as much time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class StaffUser:
    id: str
    tenant_id: str
    email: str
    role: str

    @property
    def actor(self) -> str:
        return f"dashboard:{self.email}"

    @property
    def can_act(self) -> bool:
        return self.role in ("admin", "agent")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class CreatedUser:
    user: StaffUser
    password: str | None  # set when it was generated (shown once)


def _staff(row: DashboardUser) -> StaffUser:
    return StaffUser(id=row.id, tenant_id=row.tenant_id, email=row.email, role=row.role)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValidationFailed.at("role", "must be admin, agent or viewer")
    return role


def create_user(
    session: Session, *, tenant_id: str, email: str, role: str, password: str | None = None
) -> CreatedUser:
    """A new dashboard user; without a password one is generated (and returned once)."""
    try:
        email = normalize_email(email)
    except ValueError as exc:
        raise ValidationFailed.at("email", str(exc)) from None
    check_role(role)
    generated = None
    if password is None:
        generated = password = secrets.token_urlsafe(15)
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValidationFailed.at("password", f"must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    if session.scalar(select(DashboardUser.id).where(DashboardUser.email == email)):
        raise Conflict.at(
            "email", "is taken", f"A dashboard user with the email {email!r} already exists."
        )
    row = DashboardUser(
        tenant_id=tenant_id,
        id=new_id("usr"),
        email=email,
        role=role,
        password_hash=_hasher.hash(password),
        created_at=datetime.now(UTC),
        disabled_at=None,
    )
    session.add(row)
    session.flush()
    return CreatedUser(user=_staff(row), password=generated)


def list_users(session: Session, *, tenant_id: str) -> list[DashboardUser]:
    return list(
        session.scalars(
            select(DashboardUser)
            .where(DashboardUser.tenant_id == tenant_id)
            .order_by(DashboardUser.created_at, DashboardUser.id)
        )
    )


def _find(session: Session, tenant_id: str, user_id: str) -> DashboardUser:
    row = session.scalar(
        select(DashboardUser)
        .where(DashboardUser.tenant_id == tenant_id, DashboardUser.id == user_id)
        .with_for_update()
    )
    if row is None:
        raise NotFound(f"No dashboard user {user_id!r}.")
    return row


def _other_admins(session: Session, tenant_id: str, user_id: str) -> int:
    return len(
        session.scalars(
            select(DashboardUser.id).where(
                DashboardUser.tenant_id == tenant_id,
                DashboardUser.role == "admin",
                DashboardUser.disabled_at.is_(None),
                DashboardUser.id != user_id,
            )
        ).all()
    )


def update_user(
    session: Session, *, tenant_id: str, user_id: str, role: str, enabled: bool
) -> DashboardUser:
    """Change a user's role or disable them (their sessions end at once). The last enabled
    admin stays an enabled admin, so nobody locks the tenant out of its settings."""
    check_role(role)
    row = _find(session, tenant_id, user_id)
    demoted = (role != "admin" or not enabled) and row.role == "admin" and not row.disabled_at
    if demoted and not _other_admins(session, tenant_id, user_id):
        raise Conflict.at(
            "role",
            "the last admin must stay an admin",
            "This is the only enabled admin; make another admin first.",
        )
    row.role = role
    if not enabled and row.disabled_at is None:
        row.disabled_at = datetime.now(UTC)
    elif enabled:
        row.disabled_at = None
    if not enabled:
        session.execute(
            delete(DashboardSession).where(
                DashboardSession.tenant_id == tenant_id, DashboardSession.user_id == user_id
            )
        )
    session.flush()
    return row


def verify_password(session: Session, *, email: str, password: str) -> StaffUser | None:
    """The user this email and password sign in, or None (whichever half was wrong)."""
    try:
        email = normalize_email(email)
    except ValueError:
        email = ""
    row = (
        session.scalar(select(DashboardUser).where(DashboardUser.email == email)) if email else None
    )
    try:
        _hasher.verify(row.password_hash if row else _DUMMY_HASH, password[:MAX_PASSWORD])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None or row.disabled_at is not None:
        return None
    return _staff(row)


# --- sessions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenedSession:
    token: str
    csrf_token: str
    expires_at: datetime


def open_session(session: Session, *, user: StaffUser) -> OpenedSession:
    now = datetime.now(UTC)
    token = new_token(TOKEN_PREFIX, user.tenant_id)
    row = DashboardSession(
        tenant_id=user.tenant_id,
        token_hash=hash_token(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + timedelta(hours=SESSION_HOURS),
    )
    session.add(row)
    # Expired sessions of this user go now (no sweeper needed).
    session.execute(
        delete(DashboardSession).where(
            DashboardSession.tenant_id == user.tenant_id,
            DashboardSession.user_id == user.id,
            DashboardSession.expires_at < now,
        )
    )
    session.flush()
    return OpenedSession(token=token, csrf_token=row.csrf_token, expires_at=row.expires_at)


@dataclass(frozen=True, slots=True)
class SignedIn:
    user: StaffUser
    csrf_token: str
    token_hash: str


def resolve_session(session: Session, *, token: str) -> SignedIn | None:
    """The signed-in user of a live session token, or None. The user's role and state are
    read on every request, so a change or a disabling applies at once."""
    tenant_id = token_tenant(TOKEN_PREFIX, token)
    if tenant_id is None:
        return None
    token_hash = hash_token(token)
    found = session.execute(
        select(DashboardSession, DashboardUser)
        .join(
            DashboardUser,
            (DashboardUser.tenant_id == DashboardSession.tenant_id)
            & (DashboardUser.id == DashboardSession.user_id),
        )
        .where(
            DashboardSession.tenant_id == tenant_id,
            DashboardSession.token_hash == token_hash,
            DashboardSession.expires_at > datetime.now(UTC),
            DashboardUser.disabled_at.is_(None),
        )
    ).first()
    if found is None:
        return None
    row, user = found
    return SignedIn(user=_staff(user), csrf_token=row.csrf_token, token_hash=token_hash)


def close_session(session: Session, *, tenant_id: str, token_hash: str) -> None:
    session.execute(
        delete(DashboardSession).where(
            DashboardSession.tenant_id == tenant_id, DashboardSession.token_hash == token_hash
        )
    )
