"""Who is signed in to the dashboard: the session cookie, CSRF tokens on every form, roles,
and the slow-down of repeated failed sign-ins."""

import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from returnstack.dashboard import users
from returnstack.dashboard.users import SignedIn
from returnstack.kit.deps import read_session
from returnstack.kit.ratelimit import TokenBuckets

SESSION_COOKIE = "rs_dashboard"
LOGIN_CSRF_COOKIE = "rs_dashboard_login"
CSRF_FIELD = "csrf_token"
PREFIX = "/dashboard"

# Per client address: 10 failures, then one more every 30 s; per email, from anywhere: 5,
# then one a minute. Per process, as the API's rate limits (see docs/api.md).
FAILURES_PER_CLIENT = (1 / 30, 10)
FAILURES_PER_EMAIL = (1 / 60, 5)


class SignInRequired(Exception):
    """Signed out: 303 to the login page (then back to where the user was going)."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class DashboardForbidden(Exception):
    """403 as an HTML page: a missing or wrong CSRF token, or a role that may not do this."""

    def __init__(self, message: str) -> None:
        self.message = message


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    secure = is_https(request)
    response.set_cookie(
        name, value, max_age, path=PREFIX, httponly=True, samesite="lax", secure=secure
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    secure = is_https(request)
    response.delete_cookie(name, path=PREFIX, httponly=True, samesite="lax", secure=secure)


def current(request: Request) -> SignedIn | None:
    """The signed-in user of this request, or None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    with read_session(request) as session:
        return users.resolve_session(session, token=token)


def signed_in(request: Request) -> SignedIn:
    found = current(request)
    if found is None:
        target = request.url.path
        if request.method == "GET" and request.url.query:
            target += "?" + request.url.query
        raise SignInRequired(target)
    request.state.dashboard_user = found
    return found


Staff = Annotated[SignedIn, Depends(signed_in)]


def login_redirect(next_path: str) -> str:
    return f"{PREFIX}/login?next={quote(next_path, safe='')}"


async def posted_form(request: Request) -> FormData:
    """The POSTed form, parsed once (Starlette keeps it on the request)."""
    return await request.form()


def check_csrf(form: FormData, expected: str) -> None:
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not secrets.compare_digest(sent, expected):
        raise DashboardForbidden(
            "The form's security token is missing or out of date. Reload the page and retry."
        )


def posting(
    staff: Staff, form: Annotated[FormData, Depends(posted_form)]
) -> tuple[SignedIn, FormData]:
    """Any signed-in user's POST (sign-out), with the session's CSRF token."""
    check_csrf(form, staff.csrf_token)
    return staff, form


AnyStaff = Annotated[tuple[SignedIn, FormData], Depends(posting)]


def acting(posted: AnyStaff) -> tuple[SignedIn, FormData]:
    """A POST by someone who may change returns and customers (admin or agent), with the
    session's CSRF token. A viewer's POST is 403, token or not."""
    if not posted[0].user.can_act:
        raise DashboardForbidden("Your role (viewer) may look but not change anything.")
    return posted


def administering(posted: AnyStaff) -> tuple[SignedIn, FormData]:
    if not posted[0].user.is_admin:
        raise DashboardForbidden("Only admins may change settings.")
    return posted


Agent = Annotated[tuple[SignedIn, FormData], Depends(acting)]
Admin = Annotated[tuple[SignedIn, FormData], Depends(administering)]


def admin_only(staff: Staff) -> SignedIn:
    if not staff.user.is_admin:
        raise DashboardForbidden("Only admins may see settings.")
    return staff


AdminPage = Annotated[SignedIn, Depends(admin_only)]


# Buckets kept per kind; beyond it the least recently failed are forgotten.
MAX_KEYS = 20_000


class SignInLimiters:
    """Only failures count; while a bucket of the attempt is empty, every attempt is
    refused, right or wrong, so a refused guess learns nothing."""

    def __init__(self) -> None:
        self.per_client = TokenBuckets(*FAILURES_PER_CLIENT, max_keys=MAX_KEYS)
        self.per_email = TokenBuckets(*FAILURES_PER_EMAIL, max_keys=MAX_KEYS)

    def wait(self, client: str, email: str) -> float:
        return max(self.per_client.wait(client), self.per_email.wait(email))

    def failed(self, client: str, email: str) -> None:
        self.per_client.drain(client)
        self.per_email.drain(email)
