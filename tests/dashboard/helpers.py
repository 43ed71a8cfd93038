"""Helpers of the dashboard suites: users, signing in, and "clicking" a button of a page the
way a browser would (the button's form, submitted with its pre-filled values), so a test can
count the clicks a task takes."""

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

import httpx
from sqlalchemy import delete

from returnstack.dashboard.users import create_user
from returnstack.models import WebhookDelivery, WebhookSubscription
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import unique

PASSWORD = "correct horse battery staple"


@dataclass
class Button:
    text: str
    name: str | None
    value: str | None


@dataclass
class Form:
    action: str
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    buttons: list[Button] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # boxes a click may tick


@dataclass
class Link:
    href: str
    text: str


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.links: list[Link] = []
        self._form: Form | None = None
        self._button: Button | None = None
        self._link: Link | None = None
        self._select: str | None = None
        self._select_first: str | None = None
        self._select_chosen = False
        self._option: dict[str, Any] | None = None
        self._textarea: list[str] | None = None
        self._textarea_name = ""
        self._label: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        if tag == "form":
            self._form = Form(action=a.get("action", ""), method=a.get("method", "get").lower())
            self.forms.append(self._form)
        elif tag == "a" and "href" in a:
            self._link = Link(href=a["href"], text="")
            self.links.append(self._link)
        elif self._form is None:
            return
        elif tag == "input":
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in a:
                if "name" in a:
                    self._form.unchecked.append(a["name"])
                return
            if "name" in a and kind not in ("submit", "button"):
                value = a.get("value", "on" if kind in ("checkbox", "radio") else "")
                self._form.fields.append((a["name"], value))
        elif tag == "button":
            self._button = Button(text="", name=a.get("name"), value=a.get("value"))
            self._label = a.get("aria-label")
            self._form.buttons.append(self._button)
        elif tag == "select":
            self._select, self._select_first, self._select_chosen = a.get("name"), None, False
        elif tag == "option":
            self._option = {"value": a.get("value"), "selected": "selected" in a, "text": ""}
        elif tag == "textarea":
            self._textarea, self._textarea_name = [], a.get("name", "")

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button.text += data
        if self._link is not None:
            self._link.text += data
        if self._option is not None:
            self._option["text"] += data
        if self._textarea is not None:
            self._textarea.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._button is not None:
            # The accessible name: aria-label when there is one, else the text.
            self._button.text = self._label or " ".join(self._button.text.split())
            self._button = None
        elif tag == "a" and self._link is not None:
            self._link.text = " ".join(self._link.text.split())
            self._link = None
        elif tag == "option" and self._option is not None:
            value = self._option["value"]
            if value is None:
                value = self._option["text"].strip()
            if self._select_first is None:
                self._select_first = value
            if self._option["selected"] and self._form is not None and self._select:
                self._form.fields.append((self._select, value))
                self._select_chosen = True
            self._option = None
        elif tag == "select":
            if not self._select_chosen and self._select and self._form is not None:
                self._form.fields.append((self._select, self._select_first or ""))
            self._select = None
        elif tag == "textarea" and self._textarea is not None and self._form is not None:
            self._form.fields.append((self._textarea_name, "".join(self._textarea)))
            self._textarea = None
        elif tag == "form":
            self._form = None


def parse(html: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(html)
    return parser


def button_names(html: str) -> list[str]:
    return [button.text for form in parse(html).forms for button in form.buttons]


class Browser:
    """Clicks through the dashboard over HTTP, counting the clicks."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.clicks = 0
        self.response: httpx.Response | None = None

    @property
    def url(self) -> str:
        assert self.response is not None
        return str(self.response.url)

    @property
    def html(self) -> str:
        assert self.response is not None
        return self.response.text

    def _follow(self, response: httpx.Response) -> httpx.Response:
        while response.status_code in (302, 303):
            response = self.http.get(urljoin(str(response.url), response.headers["location"]))
        self.response = response
        return response

    def goto(self, path: str) -> httpx.Response:
        return self._follow(self.http.get(path))

    def click_link(self, text: str) -> httpx.Response:
        matches = [link for link in parse(self.html).links if link.text == text]
        assert len(matches) == 1, f"{len(matches)} links named {text!r}"
        self.clicks += 1
        return self._follow(self.http.get(urljoin(self.url, matches[0].href)))

    def click(self, text: str, **changes: str) -> httpx.Response:
        """Press the one button named `text`, submitting its form as pre-filled (plus the
        given field changes, which are typing or ticking a box, not clicks)."""
        found = [
            (form, button)
            for form in parse(self.html).forms
            for button in form.buttons
            if button.text == text
        ]
        assert len(found) == 1, f"{len(found)} buttons named {text!r}: {button_names(self.html)}"
        form, button = found[0]
        data = [(name, changes.get(name, value)) for name, value in form.fields]
        data += [(name, changes[name]) for name in form.unchecked if name in changes]
        if button.name:
            data.append((button.name, button.value or ""))
        self.clicks += 1
        url = urljoin(self.url, form.action or self.url)
        if form.method == "post":
            fields: dict[str, list[str]] = {}
            for name, value in data:
                fields.setdefault(name, []).append(value)
            response = self.http.post(url, data=fields)
        else:
            response = self.http.get(url, params=[(name, value) for name, value in data])
        return self._follow(response)


def make_user(
    database: DatabaseFixture, tenant: TenantFixture, role: str, email: str | None = None
) -> str:
    email = email or f"{unique(role)}@staff.example"
    with database.db.transaction() as session:
        create_user(session, tenant_id=tenant.id, email=email, role=role, password=PASSWORD)
    return email


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def sign_in(http: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    page = http.get("/dashboard/login")
    assert page.status_code == 200, page.text
    return http.post(
        "/dashboard/login",
        data={"csrf_token": csrf_of(page.text), "email": email, "password": password},
    )


def drop_webhooks(database: DatabaseFixture, tenant: TenantFixture) -> None:
    """Delete the tenant's webhooks and their queued attempts: a later test's dispatcher
    (they share the database) must not find them and try to deliver."""
    with database.db.transaction() as session:
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant.id))
        session.execute(
            delete(WebhookSubscription).where(WebhookSubscription.tenant_id == tenant.id)
        )
