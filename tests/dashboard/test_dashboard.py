"""The staff dashboard through the app (API.md section 12), on SQLite and PostgreSQL: sign-in,
sessions and CSRF, roles, every page, and every action going through the same services as
the API (the history names `dashboard:<email>`)."""

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event

from returnstack.app import create_app
from returnstack.dashboard.users import list_users
from returnstack.webhooks import service as webhooks_service
from returnstack.webhooks.dispatcher import Dispatcher
from tests.conftest import DatabaseFixture, TenantFixture
from tests.dashboard.helpers import (
    PASSWORD,
    Browser,
    button_names,
    csrf_of,
    drop_webhooks,
    make_user,
    parse,
    sign_in,
)
from tests.factories import return_event, unique
from tests.kit.test_routing import api_routes
from tests.returns.helpers import Api, line, person, wanted
from tests.webhooks.receiver import running_receiver

PAGES = [
    "/dashboard/returns",
    "/dashboard/returns/new",
    "/dashboard/customers",
    "/dashboard/insights",
    "/dashboard/settings",
]
ACTION_BUTTONS = {"Approve", "Decline", "Receive", "Refund", "Close", "Cancel", "Reopen"}


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        yield client


def staff_client(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, role: str
) -> tuple[TestClient, str]:
    client = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    email = make_user(database, tenant, role)
    response = sign_in(client, email)
    assert response.status_code == 303, response.text
    return client, email


@pytest.fixture
def api(client: TestClient, tenant: TenantFixture) -> Api:
    return Api(client, tenant)


# --- signing in ------------------------------------------------------------------------------


def test_signed_out_every_page_redirects_to_the_login_page(http: TestClient) -> None:
    for path in [
        *PAGES,
        "/dashboard",
        "/dashboard/returns/R-000001",
        "/dashboard/customers/profile?id=x",
    ]:
        response = http.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/dashboard/login?next="), path
    response = http.post("/dashboard/returns/R-000001/approve", data={"csrf_token": "x"})
    assert response.status_code == 303
    login = http.get("/dashboard/login")
    assert login.status_code == 200
    assert 'for="email">Email<' in login.text
    assert 'for="password">Password<' in login.text
    assert "Sign in" in button_names(login.text)


def test_an_unknown_page_is_a_404_page_with_sign_out_or_the_login_page(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, http: TestClient
) -> None:
    """API.md 12: every page but the login page sends a signed-out visitor to it, and
    `Sign out` is on every page, a page that does not exist included."""
    response = http.get("/dashboard/customers/cust-1/history")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/dashboard/login?next=")
    client, _ = staff_client(app, database, tenant, "viewer")
    response = client.get("/dashboard/customers/cust-1/history")
    assert response.status_code == 404
    assert "Sign out" in button_names(response.text)


def test_no_dashboard_route_answers_a_stranger_or_an_api_key(
    app: FastAPI, http: TestClient, tenant: TenantFixture
) -> None:
    """Every route under /dashboard (but the login page and the static files) sends a caller
    without a dashboard session to the login page, whatever key or session it carries."""
    routes = [
        (method, route.path_format)
        for route in api_routes(app)
        if route.path_format.startswith("/dashboard")
        for method in route.methods or ()
        if method != "HEAD"
    ]
    assert len(routes) >= 20
    values = {
        "number": "R-000001",
        "action": "approve",
        "attachment_id": "att_x",
        "customer_id": "cust-1",
        "email": "a@b.example",
        "key_id": "key_x",
        "user_id": "usr_x",
        "segment_id": "seg_x",
        "webhook_id": "whk_x",
        "delivery_id": "del_x",
    }
    for method, path in routes:
        url = path.format(**values)
        for headers in ({}, tenant.headers, tenant.publishable_headers):
            response = http.request(method, url, headers=headers, data={"csrf_token": "x"})
            if path == "/dashboard/login":
                assert response.status_code in (200, 403), (method, path)
                continue
            assert response.status_code == 303, (method, path, response.status_code)
            assert response.headers["location"].startswith("/dashboard/login"), (method, path)


def test_sign_in_cookie_is_httponly_lax_and_leads_back(
    http: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    email = make_user(database, tenant, "agent")
    page = http.get("/dashboard/login", params={"next": "/dashboard/insights"})
    response = http.post(
        "/dashboard/login",
        data={
            "csrf_token": csrf_of(page.text),
            "email": email.upper(),  # emails compare case-insensitively
            "password": PASSWORD,
            "next": "/dashboard/insights",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/insights"
    cookie = next(
        value
        for value in response.headers.get_list("set-cookie")
        if value.startswith("rs_dashboard=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain HTTP here
    page = http.get("/dashboard/returns")
    assert page.status_code == 200
    assert "Sign out" in button_names(page.text)


def test_cookies_are_secure_over_https(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    email = make_user(database, tenant, "viewer")
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        response = sign_in(client, email)
        assert response.status_code == 303
        assert all("Secure" in value for value in response.headers.get_list("set-cookie"))


def test_next_never_leads_off_the_dashboard(
    http: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    email = make_user(database, tenant, "agent")
    for target in ("https://evil.example/", "//evil.example/x", "/v1/returns"):
        http.cookies.clear()
        page = http.get("/dashboard/login")
        response = http.post(
            "/dashboard/login",
            data={
                "csrf_token": csrf_of(page.text),
                "email": email,
                "password": PASSWORD,
                "next": target,
            },
        )
        assert response.headers["location"] == "/dashboard/returns", target


def test_a_wrong_pair_does_not_say_which_half_was_wrong(
    http: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    email = make_user(database, tenant, "agent")
    wrong_password = sign_in(http, email, "not the password at all")
    unknown_email = sign_in(http, "nobody-here@staff.example", PASSWORD)
    assert wrong_password.status_code == unknown_email.status_code == 401
    message = "The email or password is not right."
    assert message in wrong_password.text
    assert message in unknown_email.text
    assert "rs_dashboard=" not in wrong_password.headers.get("set-cookie", "").replace(
        "rs_dashboard_login", ""
    )
    assert http.get("/dashboard/returns").status_code == 303


def test_repeated_failures_slow_down_even_the_right_password(
    http: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    email = make_user(database, tenant, "agent")
    statuses = [sign_in(http, email, f"wrong password {n}").status_code for n in range(5)]
    assert statuses == [401] * 5
    blocked = sign_in(http, email, PASSWORD)
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    assert "Too many failed sign-ins" in blocked.text
    assert http.get("/dashboard/returns").status_code == 303


def test_a_disabled_user_cannot_sign_in(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    admin, _ = staff_client(app, database, tenant, "admin")
    agent, agent_email = staff_client(app, database, tenant, "agent")
    assert agent.get("/dashboard/returns").status_code == 200
    settings = admin.get("/dashboard/settings")
    with database.db.transaction(write=False) as session:
        user_id = next(
            u.id for u in list_users(session, tenant_id=tenant.id) if u.email == agent_email
        )
    response = admin.post(
        f"/dashboard/settings/users/{user_id}",
        data={"csrf_token": csrf_of(settings.text), "role": "agent", "enabled": "no"},
    )
    assert response.status_code == 303
    # Signed out at once, and cannot sign in again.
    assert agent.get("/dashboard/returns").status_code == 303
    assert sign_in(agent, agent_email).status_code == 401


def test_sign_out_ends_the_session(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    client, _ = staff_client(app, database, tenant, "viewer")
    page = client.get("/dashboard/returns")
    stolen_cookie = client.cookies.get("rs_dashboard")
    assert client.post("/dashboard/logout", data={}).status_code == 403  # no token
    response = client.post("/dashboard/logout", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"
    # The old cookie is worthless now.
    client.cookies.set("rs_dashboard", stolen_cookie or "", path="/dashboard")
    assert client.get("/dashboard/returns").status_code == 303


def test_login_form_without_its_token_is_403(
    http: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    email = make_user(database, tenant, "agent")
    response = http.post("/dashboard/login", data={"email": email, "password": PASSWORD})
    assert response.status_code == 403


# --- roles and CSRF --------------------------------------------------------------------------


def _requested_return(api: Api) -> dict[str, Any]:
    order = api.buy(line("1", quantity=2, unit_price=2500))
    return api.open(wanted(order, quantity=2), customer=order["customer"])


def test_a_post_without_a_valid_csrf_token_is_403_and_changes_nothing(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    ret = _requested_return(api)
    client, _ = staff_client(app, database, tenant, "agent")
    path = f"/dashboard/returns/{ret['number']}/approve"
    assert client.post(path, data={}).status_code == 403
    assert client.post(path, data={"csrf_token": "forged"}).status_code == 403
    # Another session's token is not this session's.
    other, _ = staff_client(app, database, tenant, "agent")
    token = csrf_of(other.get("/dashboard/returns").text)
    assert client.post(path, data={"csrf_token": token}).status_code == 403
    assert api.read(ret)["status"] == "requested"


def test_a_viewer_sees_no_action_buttons_and_a_post_is_403(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    ret = _requested_return(api)
    viewer, _ = staff_client(app, database, tenant, "viewer")
    page = viewer.get(f"/dashboard/returns/{ret['number']}")
    assert page.status_code == 200
    assert not ACTION_BUTTONS & set(button_names(page.text))
    assert button_names(page.text) == ["Sign out"]
    token = csrf_of(page.text)
    for action in ("approve", "decline", "cancel"):
        forged = viewer.post(
            f"/dashboard/returns/{ret['number']}/{action}",
            data={"csrf_token": token, "reason": "other"},
        )
        assert forged.status_code == 403
    assert viewer.post("/dashboard/returns/new", data={"csrf_token": token}).status_code == 403
    assert viewer.get("/dashboard/settings").status_code == 403
    assert api.read(ret)["status"] == "requested"
    # An agent sees them.
    agent, _ = staff_client(app, database, tenant, "agent")
    buttons = set(button_names(agent.get(f"/dashboard/returns/{ret['number']}").text))
    assert {"Approve", "Decline", "Cancel"} <= buttons


def test_settings_are_for_admins_only(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    agent, _ = staff_client(app, database, tenant, "agent")
    assert agent.get("/dashboard/settings").status_code == 403
    token = csrf_of(agent.get("/dashboard/returns").text)
    assert agent.post("/dashboard/settings/keys", data={"csrf_token": token}).status_code == 403
    assert "Settings" not in [
        link.text for link in parse(agent.get("/dashboard/returns").text).links
    ]
    admin, _ = staff_client(app, database, tenant, "admin")
    assert admin.get("/dashboard/settings").status_code == 200


def test_tenants_never_see_each_other(
    app: FastAPI,
    database: DatabaseFixture,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
    client: TestClient,
) -> None:
    theirs = _requested_return(Api(client, other_tenant))
    ours = _requested_return(Api(client, tenant))
    agent, _ = staff_client(app, database, tenant, "agent")
    listing = agent.get("/dashboard/returns").text
    assert ours["customer"]["email"] in listing
    assert theirs["customer"]["email"] not in listing
    # Return numbers are per tenant: R-000001 of the other tenant is never shown.
    page = agent.get(f"/dashboard/returns/{theirs['id']}")
    assert page.status_code == 404
    token = csrf_of(listing)
    response = agent.post(f"/dashboard/returns/{theirs['id']}/approve", data={"csrf_token": token})
    assert response.status_code == 404
    assert Api(client, other_tenant).read(theirs)["status"] == "requested"
    customer = agent.get("/dashboard/customers/profile", params={"id": theirs["customer"]["id"]})
    assert customer.status_code == 404


# --- returns ---------------------------------------------------------------------------------


def test_a_simple_return_takes_nine_clicks_from_the_list(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    api.set_policy(restocking_fee_percent=10)
    order = api.buy(line("1", quantity=2, unit_price=1999), line("2", unit_price=500))
    ret = api.open(wanted(order, quantity=2), wanted(order, "2"), customer=order["customer"])
    client, email = staff_client(app, database, tenant, "agent")
    browser = Browser(client)
    browser.goto("/dashboard/returns")
    browser.click_link(ret["number"])
    assert "Status: <strong" in browser.html
    # API.md 12: each action's button leads to its form, confirmed by a button of the same
    # name; the likely next step's button comes first, as the primary one.
    path = f"/dashboard/returns/{ret['number']}"
    for action, status in (
        ("Approve", "approved"),
        ("Receive", "received"),
        ("Refund", "refunded"),
        ("Close", "closed"),
    ):
        before = api.read(ret)["status"]
        buttons = [name for name in button_names(browser.html) if name != "Sign out"]
        assert buttons[0] == action
        assert buttons.count(action) == 1
        assert f'class="primary">{action}</button>' in browser.html
        browser.click(action)
        assert browser.url.split("?")[0].endswith(f"{path}/{action.lower()}")
        assert api.read(ret)["status"] == before  # nothing done yet
        assert button_names(browser.html).count(action) == 1
        if action == "Refund":
            assert 'value="40.48"' in browser.html  # the default amount, pre-filled
        browser.click(action)
        assert browser.url.split("#")[0].endswith(path)
        assert api.read(ret)["status"] == status
    assert browser.clicks == 9
    final = api.read(ret)
    assert final["status"] == "closed"
    assert [item["received_quantity"] for item in final["items"]] == [2, 1]
    # The default refund: value received less the 10 % fee, rounded down.
    assert final["refund"]["amount"] == (2 * 1999 + 500) * 90 // 100
    assert final["refund"]["method"] == "original_payment"
    actions = [(entry["action"], entry["actor"]) for entry in final["history"]]
    assert actions[1:] == [
        ("approve", f"dashboard:{email}"),
        ("receive", f"dashboard:{email}"),
        ("refund", f"dashboard:{email}"),
        ("close", f"dashboard:{email}"),
    ]
    # The history is on the page.
    assert f"dashboard:{email}" in browser.html


def test_every_action_has_its_own_form_with_a_confirming_button(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    client, email = staff_client(app, database, tenant, "agent")
    browser = Browser(client)
    declined = _requested_return(api)
    browser.goto(f"/dashboard/returns/{declined['number']}")
    browser.click("Decline")  # leads to the form
    assert browser.response is not None
    assert browser.response.url.path.endswith("/decline")
    browser.click("Decline", reason="final_sale", note="past the date")
    assert api.read(declined)["status"] == "declined"
    assert api.read(declined)["history"][-1]["note"] == "final_sale: past the date"
    browser.click("Close")
    browser.click("Close")
    browser.click("Reopen")
    browser.click("Reopen")
    assert api.read(declined)["status"] == "requested"
    browser.click("Cancel")
    browser.click("Cancel", reason="customer changed mind")
    assert api.read(declined)["status"] == "cancelled"
    assert {entry["actor"] for entry in api.read(declined)["history"][1:]} == {f"dashboard:{email}"}


def test_action_errors_show_next_to_the_field_and_change_nothing(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    ret = _requested_return(api)
    api.act(ret, "approve")
    client, _ = staff_client(app, database, tenant, "agent")
    browser = Browser(client)
    browser.goto(f"/dashboard/returns/{ret['number']}")
    browser.click("Receive")  # the form
    response = browser.click("Receive", quantity_0="3")
    assert response.status_code == 422
    assert "at most 2 more" in response.text
    assert api.read(ret)["status"] == "approved"
    browser.click("Receive", quantity_0="2")
    browser.click("Refund")  # the form
    response = browser.click("Refund", amount="50.01")
    assert response.status_code == 422
    assert "must be at most 5000" in response.text
    response = browser.click("Refund", amount="1.234")
    assert response.status_code == 422
    assert "more than 2 decimals" in response.text
    after = api.read(ret)
    assert after["status"] == "received"
    assert after["refund"] is None
    browser.click("Refund", amount="10.00", method="store_credit")
    assert api.read(ret)["refund"] == {
        **api.read(ret)["refund"],
        "amount": 1000,
        "method": "store_credit",
    }


def test_a_stale_form_does_not_overwrite_a_change_made_meanwhile(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    ret = _requested_return(api)
    client, _ = staff_client(app, database, tenant, "agent")
    browser = Browser(client)
    browser.goto(f"/dashboard/returns/{ret['number']}")
    browser.click("Approve")  # the form, made from this version
    api.act(ret, "approve")  # someone else, meanwhile
    response = browser.click("Approve")
    assert response.status_code in (409, 422)
    assert len(api.read(ret)["history"]) == 2


def test_the_list_filters_searches_and_pages(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    first = _requested_return(api)
    second = _requested_return(api)
    api.act(second, "approve")
    client, _ = staff_client(app, database, tenant, "viewer")
    page = client.get("/dashboard/returns")
    assert 'for="q">Search<' in page.text
    links = [link.text for link in parse(page.text).links]
    assert links.index(second["number"]) < links.index(first["number"])  # newest first
    only_requested = client.get("/dashboard/returns", params={"status": "requested"}).text
    assert first["number"] in only_requested
    assert second["number"] not in only_requested
    found = client.get("/dashboard/returns", params={"q": second["customer"]["email"]}).text
    assert second["number"] in found
    assert first["number"] not in found
    by_number = client.get("/dashboard/returns", params={"q": first["number"]}).text
    assert first["number"] in by_number
    assert second["number"] not in by_number
    bad = client.get("/dashboard/returns", params={"status": "lost", "email": "nope"})
    assert bad.status_code == 400
    assert "unknown status" in bad.text
    assert "not a valid email" in bad.text
    queue = client.get("/dashboard/returns", params={"status": "requested", "queue": "oldest"})
    assert "Requested, waiting longest" in queue.text
    assert first["number"] in queue.text
    # Each row: number, status, customer email, items and amount.
    row = page.text.split(f">{first['number']}</a>", 1)[1].split("</tr>", 1)[0]
    assert "requested" in row
    assert first["customer"]["email"] in row
    assert "2 \N{MULTIPLICATION SIGN}" in row
    assert "50.00 EUR" in row


def test_the_list_pages_with_a_cursor(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    order = api.buy(line("1", quantity=30))
    for _ in range(26):
        api.open(wanted(order), customer=order["customer"])
    client, _ = staff_client(app, database, tenant, "viewer")
    browser = Browser(client)
    browser.goto("/dashboard/returns")
    first_page = {link.text for link in parse(browser.html).links if link.text.startswith("R-")}
    browser.click_link("Next page")
    second_page = {link.text for link in parse(browser.html).links if link.text.startswith("R-")}
    assert len(first_page) == 25
    assert len(second_page) == 1
    assert not first_page & second_page


def test_the_return_page_shows_money_customer_and_product_rates(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    customer = person()
    older = api.buy(line("1", product_id="SKU-R", unit_price=4000), customer=customer)
    api.record_return(older, {"product_id": "SKU-R", "quantity": 1, "reason": "defective"})
    order = api.buy(line("1", product_id="SKU-R", unit_price=4000), customer=customer)
    ret = api.open(wanted(order), customer=customer)
    client, _ = staff_client(app, database, tenant, "viewer")
    page = client.get(f"/dashboard/returns/{ret['number']}").text
    assert "40.00 EUR" in page
    assert "Net lifetime value (EUR)" in page
    assert "50.0 %" in page  # SKU-R: 1 came back (recorded) of 2 sold; this one is not back yet
    assert customer["id"] in page


def test_photos_are_shown_and_served_to_signed_in_staff_only(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api, http: TestClient
) -> None:
    ret = _requested_return(api)
    png = (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
        b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00"
        b"\x00\x00\x00IEND\xaeB`\x82"
    )
    upload = api.http.post(
        f"/v1/returns/{ret['id']}/attachments",
        files={"file": ("photo.png", png, "image/png")},
        headers=api.tenant.headers,
    )
    assert upload.status_code == 201, upload.text
    client, _ = staff_client(app, database, tenant, "viewer")
    page = client.get(f"/dashboard/returns/{ret['number']}").text
    url = f"/dashboard/returns/{ret['number']}/attachments/{upload.json()['id']}"
    assert f'<img src="{url}"' in page
    image = client.get(url)
    assert image.status_code == 200
    assert image.content == png
    assert http.get(url).status_code == 303  # signed out


def test_a_guest_return_over_two_orders_with_its_preview(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    guest = {"email": f"guest-{person()['id']}@example.com"}
    first = api.buy(line("1", unit_price=1500), customer=guest)
    second = api.buy(line("1", unit_price=2500, quantity=2), customer=guest)
    old = api.buy(line("1", unit_price=900), customer=guest, days_ago=60)
    client, email = staff_client(app, database, tenant, "agent")
    browser = Browser(client)
    browser.goto("/dashboard/returns/new")
    browser.click("Find orders", email=guest["email"])
    assert first["order_id"] in browser.html
    assert second["order_id"] in browser.html
    typed = {
        f"qty:{first['order_id']}:1": "1",
        f"qty:{second['order_id']}:1": "2",
        f"reason:{second['order_id']}:1": "defective",
        f"qty:{old['order_id']}:1": "1",
    }
    browser.click("Preview", **typed)
    assert "Create return" not in button_names(browser.html)  # one item is not eligible
    assert "The return window has passed." in browser.html
    typed[f"qty:{old['order_id']}:1"] = "0"
    browser.click("Preview", **typed)
    assert "A refund would pay" in browser.html
    assert "65.00 EUR" in browser.html
    response = browser.click("Create return", **typed)
    assert response.status_code == 200
    number = response.url.path.rsplit("/", 1)[1]
    created = api.read(number)
    assert created["source"] == "dashboard"
    assert created["customer"]["email"] == guest["email"]
    assert {item["order_id"] for item in created["items"]} == {
        first["order_id"],
        second["order_id"],
    }
    assert created["history"][0]["actor"] == f"dashboard:{email}"


def test_new_return_takes_order_and_line_ids_with_any_characters(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    order = api.buy(line("a:1/b", unit_price=1234), order_id=f"web:{person()['id']}/x y")
    client, _ = staff_client(app, database, tenant, "agent")
    browser = Browser(client)
    browser.goto("/dashboard/returns/new")
    browser.click("Find orders", customer_id=order["customer"]["id"])
    form = next(f for f in parse(browser.html).forms for b in f.buttons if b.text == "Preview")
    quantity = next(name for name, _ in form.fields if name.startswith("qty:"))
    browser.click("Preview", **{quantity: "1"})
    response = browser.click("Create return", **{quantity: "1"})
    created = api.read(response.url.path.rsplit("/", 1)[1])
    assert [(i["order_id"], i["line_id"]) for i in created["items"]] == [
        (order["order_id"], "a:1/b")
    ]


def test_new_return_shows_problems_in_words(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    order = api.buy(line("1"))
    client, _ = staff_client(app, database, tenant, "agent")
    page = client.get("/dashboard/returns/new", params={"customer_id": "nobody-at-all"})
    assert page.status_code == 400
    assert "no orders found" in page.text
    browser = Browser(client)
    browser.goto(f"/dashboard/returns/new?customer_id={order['customer']['id']}")
    key = f"{order['order_id']}:1"
    response = browser.click("Preview", **{f"qty:{key}": "1", f"reason:{key}": "other"})
    assert response.status_code == 200
    assert "This reason needs a note." in response.text
    response = browser.click("Preview", **{f"qty:{key}": "5"})
    assert "More units than can still be returned." in response.text
    response = browser.click("Preview", **{f"qty:{key}": "0"})
    assert response.status_code == 422
    assert "enter a quantity" in response.text


# --- customers -------------------------------------------------------------------------------


def test_customer_search_profile_segment_and_csv(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    customer = person()
    order = api.buy(line("1", unit_price=12000), customer=customer)
    api.record_return(
        order,
        {"product_id": order["items"][0]["product_id"], "quantity": 1, "reason": "defective"},
        refund={"amount": 12000, "method": "original_payment"},
    )
    client, _ = staff_client(app, database, tenant, "viewer")
    by_id = client.get("/dashboard/customers", params={"search": customer["id"]})
    assert by_id.status_code == 303
    by_email = client.get("/dashboard/customers", params={"search": customer["email"].upper()})
    assert by_email.headers["location"] == by_id.headers["location"]
    profile = client.get(by_id.headers["location"]).text
    assert "Net revenue" in profile
    assert "0.00 EUR" in profile
    assert "120.00 EUR" in profile
    assert client.get("/dashboard/customers", params={"search": "nobody"}).status_code == 404

    page = client.get("/dashboard/customers", params={"where": "refunded >= 12000"})
    assert page.status_code == 200
    assert customer["id"] in page.text
    assert 'for="where">Where<' in page.text
    link = next(link for link in parse(page.text).links if link.text == "Download CSV")
    export = client.get(link.href)
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [row["customer_id"] for row in rows] == [customer["id"]]
    broken = client.get("/dashboard/customers", params={"where": "refunded >= "})
    assert broken.status_code == 400
    assert "at character" in broken.text
    assert 'class="caret"' in broken.text


def test_segments_are_saved_listed_and_deleted(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    client, _ = staff_client(app, database, tenant, "agent")
    browser = Browser(client)
    browser.goto("/dashboard/customers?where=returns+%3E%3D+1")
    response = browser.click("Save segment", name="   ")
    assert response.status_code == 422  # the API's message, next to the name
    assert "at least 1 character" in _field_error(response.text, "segment-name")
    browser.click("Save segment", name="Returners")
    assert "The segment was saved." in browser.html
    saved = api.get("/v1/segments").json()["data"]
    assert [(s["name"], s["where"]) for s in saved] == [("Returners", "returns >= 1")]
    browser.click_link("Returners")
    assert "returns &gt;= 1" in browser.html
    browser.click("Delete segment Returners")
    assert api.get("/v1/segments").json()["data"] == []
    viewer, _ = staff_client(app, database, tenant, "viewer")
    page = viewer.get("/dashboard/customers", params={"where": "returns >= 1"}).text
    assert "Save segment" not in button_names(page)


def test_a_guest_has_a_page_too(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    guest = {"email": f"g-{person()['id']}@example.com"}
    api.buy(line("1", unit_price=700), customer=guest)
    client, _ = staff_client(app, database, tenant, "viewer")
    found = client.get("/dashboard/customers", params={"search": guest["email"]})
    assert found.status_code == 303
    assert found.headers["location"].startswith("/dashboard/customers/profile?email=")
    page = client.get(found.headers["location"])
    assert page.status_code == 200
    assert "7.00 EUR" in page.text


# --- insights and settings -------------------------------------------------------------------


def test_insights_draw_charts_with_their_numbers(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    order = api.buy(
        line("1", product_id="SKU-HOT", quantity=4, unit_price=1000, category="Shoes/Run"),
        channel="offline",
        store={"id": "berlin-01", "name": "Berlin Mitte"},
    )
    api.record_return(
        order,
        {"product_id": "SKU-HOT", "quantity": 3, "reason": "size_too_small"},
        refund={"amount": 3000, "method": "original_payment"},
        channel="offline",
        store={"id": "berlin-01"},
    )
    client, _ = staff_client(app, database, tenant, "viewer")
    page = client.get("/dashboard/insights", params={"currency": "EUR", "period": "month"})
    assert page.status_code == 200
    text = page.text
    assert text.count("<svg") >= 7
    for expected in (
        "SKU-HOT",
        "Shoes/Run",
        "Berlin Mitte (berlin-01)",
        "offline",
        "size_too_small",
        "75.0 %",
        "30.00 EUR",
    ):
        assert expected in text, expected
    assert client.get("/dashboard/insights", params={"from": "nope"}).status_code == 400
    # The figures are kept until the data changes: a new sale shows at once.
    api.buy(
        line("1", product_id="SKU-HOT", quantity=4, unit_price=1000, category="Shoes/Run"),
        channel="offline",
        store={"id": "berlin-01", "name": "Berlin Mitte"},
    )
    again = client.get("/dashboard/insights", params={"currency": "EUR", "period": "month"})
    assert "37.5 %" in again.text  # 3 of 8 units
    assert "75.0 %" not in again.text


def test_admin_settings_policy_keys_and_users(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    admin, _ = staff_client(app, database, tenant, "admin")
    browser = Browser(admin)
    browser.goto("/dashboard/settings")
    browser.click(
        "Save policy",
        return_window_days="45",
        restocking_fee_percent="12.5",
        return_shipping_fee="4.95",
        reason_code_10="too_late",
        reason_label_10="Arrived too late",
    )
    policy = api.get("/v1/policy").json()
    assert policy["return_window_days"] == 45
    assert policy["restocking_fee_percent"] == 12.5
    assert policy["return_shipping_fee"] == 495
    assert policy["reasons"][-1] == {
        "code": "too_late",
        "label": "Arrived too late",
        "merchant_fault": False,
    }
    response = browser.click("Save policy", return_window_days="-1", rules="[{]")
    assert response.status_code == 422
    assert "is not valid JSON" in response.text
    assert api.get("/v1/policy").json()["return_window_days"] == 45

    response = browser.click("Create key", kind="secret")
    key = response.text.split('id="new-key" readonly value="', 1)[1].split('"', 1)[0]
    assert key.startswith("sk_")
    assert (
        api.http.get("/v1/returns", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    )
    assert key not in browser.goto("/dashboard/settings").text  # shown once
    browser.click(f"Revoke {key[:11]}")
    assert (
        api.http.get("/v1/returns", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    )

    response = browser.click("Add user", email="new.agent@staff.example", role="agent")
    password = response.text.split('id="new-password" readonly value="', 1)[1].split('"', 1)[0]
    fresh = TestClient(app, follow_redirects=False)
    assert sign_in(fresh, "new.agent@staff.example", password).status_code == 303
    response = browser.click("Add user", email="new.agent@staff.example", role="agent")
    assert response.status_code == 422
    assert "is taken" in response.text


@pytest.mark.usefixtures("no_webhooks_left")
def test_admin_adds_a_webhook_and_sees_its_deliveries(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    admin, _ = staff_client(app, database, tenant, "admin")
    browser = Browser(admin)
    browser.goto("/dashboard/settings")
    response = browser.click("Add webhook", url="http://127.0.0.1:9/hook")
    assert response.status_code == 422  # a private address (the API's check)
    assert "url" in response.text
    response = browser.click(
        "Add webhook", url="https://hooks.example.com/returns", events="return.approved"
    )
    assert response.status_code == 200, response.text
    secret = response.text.split('id="new-webhook-secret" readonly value="', 1)[1].split('"')[0]
    assert secret
    listed = api.get("/v1/webhooks").json()["data"]
    assert [(w["url"], w["events"]) for w in listed] == [
        ("https://hooks.example.com/returns", ["return.approved"])
    ]
    assert secret not in browser.goto("/dashboard/settings").text
    assert "https://hooks.example.com/returns" in browser.html


def test_the_last_admin_cannot_demote_themself(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    admin, email = staff_client(app, database, tenant, "admin")
    browser = Browser(admin)
    browser.goto("/dashboard/settings")
    response = browser.click(f"Save {email}", **{})
    assert response.status_code == 200
    form = next(
        f for f in parse(browser.html).forms for b in f.buttons if b.text == f"Save {email}"
    )
    role_field = next(name for name, _ in form.fields if name == "role")
    response = browser.click(f"Save {email}", **{role_field: "viewer"})
    assert response.status_code == 409
    assert "only enabled admin" in response.text
    assert admin.get("/dashboard/settings").status_code == 200


@pytest.mark.parametrize("role", ["admin", "agent", "viewer"])
def test_every_page_answers_for_every_role(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api, role: str
) -> None:
    ret = _requested_return(api)
    client, _ = staff_client(app, database, tenant, role)
    pages = [
        *PAGES,
        f"/dashboard/returns/{ret['number']}",
        f"/dashboard/returns/{ret['number']}/approve",
        f"/dashboard/customers/profile?id={ret['customer']['id']}",
    ]
    for path in pages:
        response = client.get(path)
        expected = 403 if path == "/dashboard/settings" and role != "admin" else 200
        assert response.status_code == expected, (path, response.text[:500])
        assert "Sign out" in button_names(response.text), path
        assert 'name="viewport"' in response.text
        assert "http://" not in response.text
        assert "https://" not in response.text
    static = client.get("/dashboard/static/dashboard.css")
    assert static.status_code == 200
    assert "text/css" in static.headers["content-type"]
    assert client.get("/dashboard/returns/R-999999").status_code == 404
    missing = client.get("/dashboard/no-such-page")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert client.get("/v1/no-such-page").json()["error"]["type"] == "not_found"


# --- webhooks in settings, and the deliveries a return caused ---------------------------------


@pytest.fixture
def private_app(database: DatabaseFixture) -> FastAPI:
    """The app with webhooks_allow_private, to subscribe a receiver on loopback."""
    settings = database.settings.model_copy(update={"webhooks_allow_private": True})
    return create_app(settings, database=database.db)


@pytest.fixture
def no_webhooks_left(database: DatabaseFixture, tenant: TenantFixture) -> Iterator[None]:
    yield
    drop_webhooks(database, tenant)


@pytest.fixture
def dispatcher(
    database: DatabaseFixture, tenant: TenantFixture, no_webhooks_left: None
) -> Iterator[Dispatcher]:
    settings = database.settings.model_copy(
        update={"webhooks_allow_private": True, "webhooks_timeout": 5.0}
    )
    running = Dispatcher(database.db, settings)
    yield running
    running.release_lease()
    running.close()


def _field_error(html: str, field_id: str) -> str:
    """The message shown next to a field (aria-describedby names it)."""
    tag = html.split(f'id="{field_id}"', 1)[1].split(">", 1)[0]
    assert 'aria-invalid="true"' in tag, tag
    error_id = tag.split('aria-describedby="', 1)[1].split('"', 1)[0]
    return unescape(html.split(f'id="{error_id}">', 1)[1].split("<", 1)[0])


def test_admin_manages_a_webhook_its_deliveries_and_sees_them_on_the_return(
    private_app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, dispatcher: Dispatcher
) -> None:
    api = Api(TestClient(private_app, raise_server_exceptions=False), tenant)
    admin, _ = staff_client(private_app, database, tenant, "admin")
    browser = Browser(admin)
    with running_receiver() as receiver:
        browser.goto("/dashboard/settings")
        response = browser.click("Add webhook", url=receiver.url, events="return.nope")
        assert response.status_code == 422
        assert "unknown event type 'return.nope'" in _field_error(response.text, "webhook-events")
        response = browser.click("Add webhook", url=receiver.url, events="*")
        assert response.status_code == 200, response.text
        created = response.text.split('id="new-webhook-secret" readonly value="', 1)[1]
        created = created.split('"', 1)[0]
        [hook] = api.get("/v1/webhooks").json()["data"]
        browser.click_link(receiver.url)
        assert browser.url.endswith(f"/dashboard/settings/webhooks/{hook['id']}")

        # Edit: the API's validation messages next to the fields, then a change that holds.
        response = browser.click("Save webhook", events="")
        assert response.status_code == 422
        assert "at least 1 item" in _field_error(response.text, "webhook-events")
        response = browser.click("Save webhook", url="ftp://x.example/", events="*")
        assert response.status_code == 422
        assert "http:// or https://" in _field_error(response.text, "webhook-url")
        browser.goto(f"/dashboard/settings/webhooks/{hook['id']}")
        response = browser.click(
            "Save webhook",
            events="return.requested, return.approved",
            description="the warehouse",
        )
        assert response.status_code == 200
        assert "Saved." in response.text
        read = api.get(f"/v1/webhooks/{hook['id']}").json()
        assert read["events"] == ["return.requested", "return.approved"]
        assert read["description"] == "the warehouse"

        # The receiver is gone (410): the webhook is disabled, its deliveries failed.
        receiver.answer_with(410)
        order = api.buy(line("1", unit_price=1500), customer=person())
        ret = api.open(wanted(order), customer=order["customer"])
        api.act(ret, "approve")
        dispatcher.run_once()
        page = browser.goto(f"/dashboard/settings/webhooks/{hook['id']}").text
        assert "disabled" in page
        assert not [name for name in button_names(page) if name.startswith("Retry")]
        browser.click("Enable")
        assert api.get(f"/v1/webhooks/{hook['id']}").json()["enabled"] is True
        # Both failed: the request answered 410, the approval was never sent.
        retries = [name for name in button_names(browser.html) if name.startswith("Retry")]
        assert sorted(name.split()[1] for name in retries) == [
            "return.approved",
            "return.requested",
        ]
        retry = next(name for name in retries if "return.requested" in name)

        # A manual retry: a new attempt, sent now.
        receiver.answer_with(200)
        browser.click(retry)
        assert "Retry queued" in browser.html
        assert "manual" in browser.html
        dispatcher.run_once()
        attempts = api.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["data"]
        assert sorted((a["event_type"], a["attempt"], a["status"]) for a in attempts) == [
            ("return.approved", 1, "failed"),
            ("return.requested", 1, "failed"),
            ("return.requested", 2, "succeeded"),
        ]
        page = browser.goto(f"/dashboard/settings/webhooks/{hook['id']}?status=failed").text
        assert page.count('class="delivery delivery-failed"') == 2
        assert "delivery-succeeded" not in page

        # Recover: the API's check of `since` next to the field, then what was missed.
        browser.goto(f"/dashboard/settings/webhooks/{hook['id']}")
        response = browser.click("Recover", since="2020-01-01T00:00")
        assert response.status_code == 422
        assert "older than the retention" in _field_error(response.text, "since")
        response = browser.click("Recover", since="not a time")
        assert response.status_code == 422
        assert "RFC 3339" in _field_error(response.text, "since")
        since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        response = browser.click("Recover", since=since)
        assert response.status_code == 200
        assert "1 message(s) queued again." in response.text  # the approval
        dispatcher.run_once()
        assert len(receiver.ids()) == 3  # the 410, the retry, the recovered approval

        # The return's page: the messages it caused and their delivery to this webhook.
        page = browser.goto(f"/dashboard/returns/{ret['number']}").text
        section = page.split('id="deliveries-heading"', 1)[1]
        assert "return.requested" in section
        assert "return.approved" in section
        assert receiver.url in section
        assert section.count("delivery-succeeded") == 2  # the retry and the recovery
        assert section.count("delivery-failed") == 2  # the first attempts
        assert "(manual)" in section
        assert "(recover)" in section

        # Rotate: a new secret, shown once; the old one still signs for a day.
        browser.goto(f"/dashboard/settings/webhooks/{hook['id']}")
        response = browser.click("Rotate secret")
        secret = response.text.split('id="new-webhook-secret" readonly value="', 1)[1]
        secret = secret.split('"', 1)[0]
        assert secret.startswith("whsec_")
        assert secret != created
        assert api.get(f"/v1/webhooks/{hook['id']}").json()["previous_secret_expires_at"]
        assert secret not in browser.goto(f"/dashboard/settings/webhooks/{hook['id']}").text

        browser.click("Disable")
        assert api.get(f"/v1/webhooks/{hook['id']}").json()["enabled"] is False
        assert "Enable" in button_names(browser.html)

        # Delete asks for the box to be ticked; then the webhook is gone.
        response = browser.click("Delete webhook")
        assert response.status_code == 422
        assert "tick the box" in response.text
        assert api.get(f"/v1/webhooks/{hook['id']}").status_code == 200
        response = browser.click("Delete webhook", confirm="yes")
        assert browser.url.endswith("/dashboard/settings?deleted=webhook#webhooks")
        assert api.get(f"/v1/webhooks/{hook['id']}").status_code == 404
        assert "Webhook deleted." in response.text


@pytest.mark.parametrize("role", ["agent", "viewer"])
@pytest.mark.usefixtures("no_webhooks_left")
def test_only_admins_see_or_change_webhooks(
    private_app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, role: str
) -> None:
    api = Api(TestClient(private_app, raise_server_exceptions=False), tenant)
    created = api.post("/v1/webhooks", {"url": "https://hooks.example.com/a", "events": ["*"]})
    hook = created.json()
    client, _ = staff_client(private_app, database, tenant, role)
    page = client.get(f"/dashboard/settings/webhooks/{hook['id']}")
    assert page.status_code == 403
    assert button_names(page.text) == ["Sign out"]  # no buttons but signing out
    token = csrf_of(client.get("/dashboard/returns").text)
    base = f"/dashboard/settings/webhooks/{hook['id']}"
    for path, form in (
        (base, {"url": "https://evil.example/", "events": "*"}),
        (f"{base}/enabled", {"enabled": "no"}),
        (f"{base}/rotate-secret", {}),
        (f"{base}/recover", {"since": "2026-01-01T00:00"}),
        (f"{base}/delete", {"confirm": "yes"}),
        (f"{base}/deliveries/del_x/retry", {}),
        ("/dashboard/settings/webhooks", {"url": "https://evil.example/", "events": "*"}),
    ):
        forged = client.post(path, data={"csrf_token": token, **form})
        assert forged.status_code == 403, path
    after = api.get(f"/v1/webhooks/{hook['id']}").json()
    assert after == api.get(f"/v1/webhooks/{hook['id']}").json()
    assert (after["url"], after["enabled"]) == ("https://hooks.example.com/a", True)
    assert len(api.get("/v1/webhooks").json()["data"]) == 1


@pytest.mark.usefixtures("no_webhooks_left")
def test_an_admins_webhook_post_without_a_csrf_token_is_403(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    hook = api.post("/v1/webhooks", {"url": "https://hooks.example.com/b", "events": ["*"]})
    hook_id = hook.json()["id"]
    admin, _ = staff_client(app, database, tenant, "admin")
    assert admin.get(f"/dashboard/settings/webhooks/{hook_id}").status_code == 200
    for suffix in ("", "/enabled", "/rotate-secret", "/delete"):
        response = admin.post(
            f"/dashboard/settings/webhooks/{hook_id}{suffix}",
            data={"enabled": "no", "confirm": "yes", "url": "https://x.example/", "events": "*"},
        )
        assert response.status_code == 403, suffix
    assert api.get(f"/v1/webhooks/{hook_id}").json()["enabled"] is True
    assert admin.get("/dashboard/settings/webhooks/whk_nope").status_code == 404


# --- one query per page section, not per row -------------------------------------------------


class Statements:
    """Counts the SQL statements the app sends while a block runs."""

    def __init__(self, database: DatabaseFixture) -> None:
        self.engine = database.db.engine
        self.count = 0

    def _seen(self, *_args: Any) -> None:
        self.count += 1

    def __enter__(self) -> "Statements":
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def _statements(database: DatabaseFixture, client: TestClient, path: str) -> int:
    client.get(path)  # warm: caches of the first request are not the page's queries
    with Statements(database) as seen:
        response = client.get(path)
    assert response.status_code == 200, response.text[:500]
    return seen.count


@pytest.mark.usefixtures("no_webhooks_left")
def test_the_pages_queries_do_not_grow_with_their_rows(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    admin, _ = staff_client(app, database, tenant, "admin")
    customer = person()
    order = api.buy(
        *(line(str(n), product_id=f"SKU-Q{n}", unit_price=1000) for n in range(1, 5)),
        customer=customer,
    )
    small = api.open(wanted(order, "1"), customer=customer)
    large = api.open(*(wanted(order, str(n)) for n in range(2, 5)), customer=customer)
    for action in ("approve", "cancel"):
        api.act(large, action, {})
    hooks = [
        api.post("/v1/webhooks", {"url": f"https://hooks.example.com/{n}", "events": ["*"]})
        for n in range(4)
    ]
    with database.db.transaction() as session:  # publish: deliveries to every webhook
        webhooks_service.publish(session, now=datetime.now(UTC))
    later = api.post("/v1/webhooks", {"url": "https://hooks.example.com/x", "events": ["*"]})
    with_rows, without_rows = hooks[0].json()["id"], later.json()["id"]
    counts = {
        "return with 1 item and 1 message": _statements(
            database, admin, f"/dashboard/returns/{small['number']}"
        ),
        "return with 3 items and 3 messages": _statements(
            database, admin, f"/dashboard/returns/{large['number']}"
        ),
    }
    assert len(set(counts.values())) == 1, counts
    settings_with_two = _statements(database, admin, "/dashboard/settings")
    api.post("/v1/webhooks", {"url": "https://hooks.example.com/5", "events": ["*"]})
    api.post("/v1/webhooks", {"url": "https://hooks.example.com/6", "events": ["*"]})
    assert _statements(database, admin, "/dashboard/settings") == settings_with_two
    assert _statements(database, admin, f"/dashboard/settings/webhooks/{with_rows}") == _statements(
        database, admin, f"/dashboard/settings/webhooks/{without_rows}"
    )
    listed = _statements(database, admin, "/dashboard/returns")
    for _ in range(3):
        api.open(wanted(api.buy(line("1"), customer=customer)), customer=customer)
    assert _statements(database, admin, "/dashboard/returns") == listed


def test_the_customer_filter_finds_returns_recorded_under_a_linked_email(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, api: Api
) -> None:
    """As GET /v1/returns?customer_id= (API.md 3's example): a return event naming only the
    customer's email is that customer's return on the dashboard's list too."""
    customer = person()
    order = api.buy(customer=customer)
    api.send(
        return_event(
            order_id=order["order_id"],
            customer={"email": customer["email"]},
            items=[{"product_id": order["items"][0]["product_id"], "quantity": 1}],
        )
    )
    [recorded] = api.list(customer_id=customer["id"])
    client, _ = staff_client(app, database, tenant, "viewer")
    page = client.get("/dashboard/returns", params={"customer_id": customer["id"]})
    assert page.status_code == 200
    assert recorded["number"] in [link.text for link in parse(page.text).links]
    other = client.get("/dashboard/returns", params={"customer_id": unique("cust")})
    assert recorded["number"] not in other.text
