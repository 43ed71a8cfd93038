"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright for
Python with that executable) against a real `returnstack serve` process, by the accessible
names of API.md section 12: sign in, work a return in 9 clicks (each action's button, then
its confirming button), create a guest
return over two orders after its preview, keyboard only, a viewer, a phone-sized screen,
the segment's CSV download.

Skipped only when no Chromium is installed and CI is unset; with CI set they must run.
Set RETURNSTACK_SCREENSHOTS=1 to write screenshots of the main pages to docs/screenshots/."""

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DatabaseFixture, TenantFixture
from tests.dashboard.helpers import PASSWORD, drop_webhooks, make_user
from tests.e2e import Server
from tests.factories import batch, item, purchase, ts, unique
from tests.webhooks.receiver import Receiver, running_receiver

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ACTIONS = ["Approve", "Decline", "Receive", "Refund", "Close", "Cancel", "Reopen"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set and Chromium is missing: apt-get install -y chromium")
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(database: DatabaseFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Loopback webhooks allowed: the server's own dispatcher delivers to a receiver here.
    with Server(
        database.url,
        tmp_path_factory.mktemp("dashboard-server"),
        RETURNSTACK_WEBHOOKS_ALLOW_PRIVATE="true",
    ) as running:
        yield running


@pytest.fixture
def page(chromium: Any, server: Server) -> Iterator[Any]:
    context = chromium.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture
def no_webhooks_left(database: DatabaseFixture, tenant: TenantFixture) -> Iterator[None]:
    """The server's dispatcher, or a later test's, must find no webhook of this test."""
    yield
    drop_webhooks(database, tenant)


class Clicks:
    """Counts the clicks of a task."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, locator: Any) -> None:
        locator.click()
        self.count += 1


def api(server: Server, tenant: TenantFixture) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=tenant.headers, timeout=60)


def buy(http: httpx.Client, customer: dict[str, str], *lines: dict[str, Any], **kw: Any) -> Any:
    event = purchase(customer=customer, items=list(lines), **kw)
    response = http.post("/v1/events", json=batch(event))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1, response.text
    return event


def open_return(http: httpx.Client, order: dict[str, Any], quantity: int = 1) -> Any:
    body = {
        "customer": order["customer"],
        "items": [
            {
                "order_id": order["order_id"],
                "line_id": "1",
                "quantity": quantity,
                "reason": "size_too_small",
            }
        ],
    }
    response = http.post("/v1/returns", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def sign_in(page: Any, email: str) -> None:
    page.goto("/dashboard/returns")
    assert "/dashboard/login" in page.url  # signed out: sent to the login page
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/dashboard/returns"))


def shoot(page: Any, name: str) -> None:
    if not os.environ.get("RETURNSTACK_SCREENSHOTS"):
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_sign_in_find_a_return_and_work_it_in_nine_clicks(
    page: Any, server: Server, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    """As a tester reading API.md 12 would: click the number, then each action's button and
    the confirming button of the same name on its form."""
    customer = {"id": unique("cust"), "email": f"{unique('ann')}@example.com"}
    with api(server, tenant) as http:
        order = buy(http, customer, item(line_id="1", quantity=2, unit_price=2999))
        ret = open_return(http, order, quantity=2)
    email = make_user(database, tenant, "agent")
    sign_in(page, email)
    page.get_by_label("Search").fill(customer["email"])
    page.get_by_label("Search").press("Enter")
    page.wait_for_url(re.compile(r"q="))
    shoot(page, "returns-list")

    click = Clicks()
    click(page.get_by_role("link", name=ret["number"]))
    page.wait_for_url(re.compile(ret["number"]))
    shoot(page, "return-requested")
    for action, before, status in (
        ("Approve", "requested", "approved"),
        ("Receive", "approved", "received"),
        ("Refund", "received", "refunded"),
        ("Close", "refunded", "closed"),
    ):
        click(page.get_by_role("button", name=action, exact=True))
        page.wait_for_url(re.compile(rf"/{action.lower()}\??$"))
        assert page.locator(f".status-{before}").count() == 1  # nothing done yet
        if action == "Receive":
            product = order["items"][0]["product_id"]
            assert page.get_by_label(f"Quantity of {product}").input_value() == "2"
            assert page.get_by_label(f"Outcome of {product}").input_value() == "received"
        if action == "Refund":
            assert page.get_by_label(re.compile("Refund amount")).input_value() == "59.98"
            assert page.get_by_label("Refund method").input_value() == "original_payment"
        click(page.get_by_role("button", name=action, exact=True))
        page.wait_for_url(re.compile(rf"/dashboard/returns/{ret['number']}(#status)?$"))
        page.wait_for_selector(f"#status .status-{status}")
    assert click.count == 9
    history = page.get_by_role("heading", name="History").locator("xpath=..").inner_text()
    for action in ("approve", "receive", "refund", "close"):
        assert action in history
    assert f"dashboard:{email}" in history
    assert not any(
        page.get_by_role("button", name=name, exact=True).count() for name in ACTIONS[:5]
    )
    assert page.get_by_role("button", name="Reopen", exact=True).count() == 1
    shoot(page, "return-closed")


def test_each_button_leads_to_its_form_with_a_confirming_button(
    page: Any, server: Server, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    customer = {"id": unique("cust"), "email": f"{unique('bo')}@example.com"}
    with api(server, tenant) as http:
        ret = open_return(http, buy(http, customer, item(line_id="1")))
    sign_in(page, make_user(database, tenant, "agent"))
    page.goto(f"/dashboard/returns/{ret['number']}")
    page.get_by_role("button", name="Decline", exact=True).click()
    page.wait_for_url(re.compile(r"/decline\??$"))
    page.get_by_label("Reason").select_option("final_sale")
    page.get_by_label("Note (optional)").fill("bought in the sale")
    page.get_by_role("button", name="Decline", exact=True).click()
    page.wait_for_selector("#status .status-declined")
    assert "final_sale: bought in the sale" in page.content()


def test_a_guest_return_over_two_orders_with_its_preview(
    page: Any, server: Server, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    guest = {"email": f"{unique('guest')}@example.com"}
    with api(server, tenant) as http:
        first = buy(http, guest, item(line_id="1", product_id="SKU-A", unit_price=1500))
        second = buy(
            http, guest, item(line_id="1", product_id="SKU-B", unit_price=2500, quantity=2)
        )
    sign_in(page, make_user(database, tenant, "agent"))
    page.get_by_role("link", name="New return").click()
    page.get_by_label("Guest email").fill(guest["email"])
    page.get_by_role("button", name="Find orders").click()
    page.get_by_label(f"Quantity of SKU-A from order {first['order_id']}").fill("1")
    page.get_by_label(f"Quantity of SKU-B from order {second['order_id']}").fill("2")
    page.get_by_label(f"Reason for SKU-B from order {second['order_id']}").select_option(
        "defective"
    )
    assert page.get_by_role("button", name="Create return").count() == 0  # preview first
    page.get_by_role("button", name="Preview").click()
    preview = page.get_by_role("heading", name="Preview").locator("xpath=..").inner_text()
    assert "Every item can be returned." in preview
    assert "65.00 EUR" in preview
    shoot(page, "new-return-preview")
    page.get_by_role("button", name="Create return").click()
    page.wait_for_url(re.compile(r"/dashboard/returns/R-\d+$"))
    text = page.content()
    assert first["order_id"] in text
    assert second["order_id"] in text
    assert "dashboard</" in text or "· dashboard ·" in text  # source


def test_a_viewer_sees_no_action_buttons_and_a_forged_post_is_403(
    page: Any, server: Server, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    customer = {"id": unique("cust"), "email": f"{unique('cy')}@example.com"}
    with api(server, tenant) as http:
        ret = open_return(http, buy(http, customer, item(line_id="1")))
    sign_in(page, make_user(database, tenant, "viewer"))
    page.goto(f"/dashboard/returns/{ret['number']}")
    assert page.get_by_text("requested", exact=True).count() >= 1
    for name in ACTIONS:
        assert page.get_by_role("button", name=name, exact=True).count() == 0, name
    assert page.get_by_role("button", name="Sign out").count() == 1
    # A forged POST, with the session cookie and even the page's own CSRF token: 403.
    token = page.locator('input[name="csrf_token"]').first.input_value()
    forged = page.request.post(
        f"/dashboard/returns/{ret['number']}/approve", form={"csrf_token": token}
    )
    assert forged.status == 403
    without_token = page.request.post(f"/dashboard/returns/{ret['number']}/approve", form={})
    assert without_token.status == 403
    with api(server, tenant) as http:
        assert http.get(f"/v1/returns/{ret['id']}").json()["status"] == "requested"


def test_an_agents_post_without_a_csrf_token_is_403(
    page: Any, server: Server, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    customer = {"id": unique("cust"), "email": f"{unique('di')}@example.com"}
    with api(server, tenant) as http:
        ret = open_return(http, buy(http, customer, item(line_id="1")))
    sign_in(page, make_user(database, tenant, "agent"))
    response = page.request.post(f"/dashboard/returns/{ret['number']}/approve", form={})
    assert response.status == 403
    with api(server, tenant) as http:
        assert http.get(f"/v1/returns/{ret['id']}").json()["status"] == "requested"


def _tab_to(page: Any, name: str, limit: int = 300) -> None:
    """Press Tab until the focused element's text (or label) is `name`."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => { const e = document.activeElement;"
            " return e ? (e.getAttribute('aria-label') || e.innerText || '').trim() : ''; }"
        )
        if focused == name:
            return
    raise AssertionError(f"Tab never reached {name!r}")


def test_the_keyboard_alone_reaches_every_action(
    page: Any, server: Server, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    customer = {"id": unique("cust"), "email": f"{unique('ed')}@example.com"}
    with api(server, tenant) as http:
        ret = open_return(http, buy(http, customer, item(line_id="1", unit_price=1000)))
        other = open_return(http, buy(http, customer, item(line_id="1", unit_price=1000)))
    email = make_user(database, tenant, "agent")
    page.goto("/dashboard/login")
    # The Email field has the focus (autofocus), then Tab leads to Password.
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'email'")
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.wait_for_function("() => document.activeElement.id === 'password'")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/dashboard/returns"))
    _tab_to(page, ret["number"])
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(ret["number"]))
    for action, status in (
        ("Approve", "approved"),
        ("Receive", "received"),
        ("Refund", "refunded"),
        ("Close", "closed"),
        ("Reopen", "requested"),
    ):
        _tab_to(page, action)  # the action's button, then its confirming button
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(rf"/{action.lower()}\??$"))
        _tab_to(page, action)
        page.keyboard.press("Enter")
        page.wait_for_selector(f"#status .status-{status}")
    # The actions a requested return has besides Approve: each reachable and working.
    page.goto(f"/dashboard/returns/{other['number']}")
    for action in ("Decline", "Cancel"):
        _tab_to(page, action)
    _tab_to(page, "Sign out")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile("/dashboard/login"))


def test_the_segment_builder_downloads_a_csv(
    page: Any, server: Server, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    customer = {"id": unique("cust"), "email": f"{unique('fi')}@example.com"}
    with api(server, tenant) as http:
        buy(http, customer, item(line_id="1", unit_price=987654))
    sign_in(page, make_user(database, tenant, "viewer"))
    page.get_by_role("link", name="Customers").click()
    page.get_by_label("Where").fill("gross_revenue >= ")
    page.get_by_label("Where").press("Enter")
    assert "at character" in page.get_by_role("alert").inner_text()
    page.get_by_label("Where").fill("gross_revenue >= 987654")
    page.get_by_label("Where").press("Enter")
    assert customer["id"] in page.content()
    shoot(page, "customers-segment")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    content = Path(download_info.value.path()).read_text()
    lines = content.strip().splitlines()
    assert lines[0].startswith("customer_id,")
    assert len(lines) == 2
    assert lines[1].startswith(customer["id"] + ",")


@pytest.mark.usefixtures("no_webhooks_left")
def test_pages_fit_a_phone_sized_screen(
    chromium: Any, server: Server, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    customer = {"id": unique("cust"), "email": f"{unique('gu')}@example.com"}
    with api(server, tenant) as http:
        ret = open_return(http, buy(http, customer, item(line_id="1"), timestamp=ts(2)))
        hook = http.post(
            "/v1/webhooks",
            json={
                "url": "https://hooks.example.com/a-rather-long-address/returns",
                "events": ["*"],
            },
        ).json()
    context = chromium.new_context(
        base_url=server.url, viewport={"width": 375, "height": 740}, is_mobile=True
    )
    try:
        phone = context.new_page()
        sign_in(phone, make_user(database, tenant, "admin"))
        for path, name in (
            ("/dashboard/returns", "phone-returns"),
            (f"/dashboard/returns/{ret['number']}", "phone-return"),
            ("/dashboard/returns/new", None),
            ("/dashboard/customers", None),
            ("/dashboard/insights", "phone-insights"),
            ("/dashboard/settings", None),
            (f"/dashboard/settings/webhooks/{hook['id']}", "phone-webhook"),
        ):
            phone.goto(path)
            overflow = phone.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 1, (path, overflow)
            if name:
                shoot(phone, name)
        phone.goto(f"/dashboard/returns/{ret['number']}")
        phone.get_by_role("button", name="Approve", exact=True).click()
        phone.wait_for_url(re.compile(r"/approve\??$"))
        phone.get_by_role("button", name="Approve", exact=True).click()
        phone.wait_for_selector("#status .status-approved")
    finally:
        context.close()


def test_screenshots_of_the_main_pages(
    page: Any, server: Server, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    """Insights and settings render in the browser (and are photographed when asked)."""
    customer = {"id": unique("cust"), "email": f"{unique('ha')}@example.com"}
    with api(server, tenant) as http:
        order = buy(http, customer, item(line_id="1", unit_price=4999, quantity=3))
        open_return(http, order, quantity=2)
    sign_in(page, make_user(database, tenant, "admin"))
    page.get_by_role("link", name="Insights").click()
    assert page.locator("svg.chart").count() == 2  # rate and refunds over time
    shoot(page, "insights")
    page.get_by_role("link", name="Settings").click()
    assert page.get_by_role("button", name="Save policy").count() == 1
    shoot(page, "settings")


def _until(page: Any, path: str, text: str, timeout: float = 30) -> None:
    """Reload `path` until `text` is on it (the server's dispatcher works in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(path)
        if text in page.content():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never showed on {path}")
        time.sleep(0.3)


def _received(receiver: Receiver, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(receiver.ids()) < count:
        assert time.monotonic() < deadline, f"{len(receiver.ids())} of {count} deliveries"
        time.sleep(0.1)


@pytest.mark.usefixtures("no_webhooks_left")
def test_an_admin_manages_a_webhook_and_a_return_shows_its_deliveries(
    page: Any, server: Server, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    source = AXE.read_text()
    sign_in(page, make_user(database, tenant, "admin"))
    with running_receiver() as receiver:
        receiver.answer_with(410)  # gone: the first delivery disables the webhook
        page.get_by_role("link", name="Settings").click()
        page.get_by_label("Webhook URL").fill(receiver.url)
        page.get_by_label("Events (comma-separated, * for all)").fill("*")
        page.get_by_role("button", name="Add webhook").click()
        secret = page.get_by_label("Signing secret").input_value()
        assert secret.startswith("whsec_")
        page.get_by_role("link", name=receiver.url).click()
        hook_path = page.url.removeprefix(server.url)
        assert hook_path.startswith("/dashboard/settings/webhooks/whk_")

        # The API's validation message next to the field, and no serious axe violation.
        events = page.get_by_label("Events (comma-separated, * for all)")
        events.fill("return.approved, return.nope")
        page.get_by_role("button", name="Save webhook").click()
        page.wait_for_selector('#webhook-events[aria-invalid="true"]')
        message = page.locator(f"#{events.get_attribute('aria-describedby')}").inner_text()
        assert "unknown event type 'return.nope'" in message
        assert not _axe(page, source)
        events.fill("return.requested, return.approved")
        page.get_by_role("button", name="Save webhook").click()
        page.get_by_text("Saved.").wait_for()

        with api(server, tenant) as http:
            customer = {"id": unique("cust"), "email": f"{unique('wh')}@example.com"}
            ret = open_return(http, buy(http, customer, item(line_id="1", unit_price=2500)))
            response = http.post(f"/v1/returns/{ret['id']}/approve", json={})
            assert response.status_code == 200, response.text
        _received(receiver, 1)
        _until(page, hook_path, ">Enable</button>")
        page.get_by_role("button", name="Enable", exact=True).click()
        page.get_by_role("button", name="Disable", exact=True).wait_for()
        retries = page.get_by_role("button", name=re.compile(r"^Retry return\."))
        # The request answered 410; the approval failed unsent, or (the webhook already
        # disabled when it was published) was never queued: recover sends it below.
        assert retries.count() in (1, 2)
        receiver.answer_with(200)
        page.get_by_role("button", name=re.compile(r"^Retry return\.requested")).click()
        page.get_by_text("Retry queued").wait_for()
        _received(receiver, 2)
        page.get_by_label("Send again what failed since (UTC)").fill("2000-01-01T00:00")
        page.get_by_role("button", name="Recover").click()
        page.wait_for_selector('#since[aria-invalid="true"]')
        since = page.get_by_label("Send again what failed since (UTC)")
        assert (
            "older than the retention"
            in page.locator(f"#{since.get_attribute('aria-describedby')}").inner_text()
        )
        page.goto(hook_path)
        page.get_by_role("button", name="Recover").click()  # the default: a day back
        page.get_by_text("1 message(s) queued again.").wait_for()
        _received(receiver, 3)
        _until(page, f"/dashboard/returns/{ret['number']}", "(recover)")
        deliveries = page.get_by_role("heading", name="Webhook deliveries").locator("xpath=..")
        text = deliveries.inner_text()
        for expected in ("return.requested", "return.approved", "succeeded", "failed", "manual"):
            assert expected in text, expected
        shoot(page, "return-deliveries")

        # The keyboard alone reaches every action of the webhook's page.
        page.goto(hook_path)
        page.locator("main").focus()
        for name in ("Save webhook", "Disable", "Rotate secret", "Recover", "Delete webhook"):
            _tab_to(page, name)
        page.goto(hook_path)
        page.get_by_role("button", name="Rotate secret").click()
        page.get_by_text("New signing secret").wait_for()
        rotated = page.get_by_label("Signing secret").input_value()
        assert rotated.startswith("whsec_")
        assert rotated != secret
        page.get_by_role("button", name="Disable", exact=True).click()
        page.get_by_role("button", name="Enable", exact=True).wait_for()
        shoot(page, "webhook")
        page.get_by_label(re.compile("Yes, delete this webhook")).check()
        page.get_by_role("button", name="Delete webhook").click()
        page.wait_for_url(re.compile(r"/dashboard/settings\?deleted=webhook"))
        page.get_by_text("Webhook deleted.").wait_for()
        assert page.get_by_role("link", name=receiver.url).count() == 0


@pytest.mark.usefixtures("no_webhooks_left")
def test_agents_and_viewers_get_no_webhook_buttons_and_a_forged_post_is_403(
    page: Any, server: Server, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    with api(server, tenant) as http:
        made = http.post(
            "/v1/webhooks", json={"url": "https://hooks.example.com/x", "events": ["*"]}
        )
        assert made.status_code == 201, made.text
        hook = made.json()
    for role in ("agent", "viewer"):
        page.context.clear_cookies()
        sign_in(page, make_user(database, tenant, role))
        assert page.get_by_role("link", name="Settings").count() == 0
        page.goto(f"/dashboard/settings/webhooks/{hook['id']}")
        for name in ("Save webhook", "Disable", "Rotate secret", "Recover", "Delete webhook"):
            assert page.get_by_role("button", name=name).count() == 0, (role, name)
        token = page.locator('input[name="csrf_token"]').first.input_value()
        for suffix in ("/rotate-secret", "/enabled", "/delete"):
            forged = page.request.post(
                f"/dashboard/settings/webhooks/{hook['id']}{suffix}",
                form={"csrf_token": token, "enabled": "no", "confirm": "yes"},
            )
            assert forged.status == 403, (role, suffix)
    with api(server, tenant) as http:
        assert http.get(f"/v1/webhooks/{hook['id']}").json()["enabled"] is True


AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"  # axe-core 4.14.1 (MPL-2.0)


@pytest.mark.usefixtures("no_webhooks_left")
def test_no_serious_accessibility_violations_on_any_page(
    chromium: Any, server: Server, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    """axe-core (shipped with the tests) finds no serious or critical violation on any page,
    signed out or in, on a desktop and on a phone-sized screen."""
    customer = {"id": unique("cust"), "email": f"{unique('ax')}@example.com"}
    with api(server, tenant) as http:
        order = buy(http, customer, item(line_id="1", unit_price=1999, quantity=2))
        ret = open_return(http, order)
        hook = http.post(
            "/v1/webhooks", json={"url": "https://hooks.example.com/axe", "events": ["*"]}
        ).json()
    pages = [
        "/dashboard/returns",
        f"/dashboard/returns/{ret['number']}",
        f"/dashboard/returns/{ret['number']}/decline",
        f"/dashboard/returns/new?customer_id={customer['id']}",
        "/dashboard/customers?where=orders+%3E%3D+1",
        "/dashboard/customers?where=orders+%3E%3D",
        f"/dashboard/customers/profile?id={customer['id']}",
        "/dashboard/insights",
        "/dashboard/settings",
        f"/dashboard/settings/webhooks/{hook['id']}",
        f"/dashboard/settings/webhooks/{hook['id']}?status=failed",
    ]
    source = AXE.read_text()
    email = make_user(database, tenant, "admin")
    for viewport in ({"width": 1280, "height": 900}, {"width": 375, "height": 740}):
        # axe is injected past the pages' Content-Security-Policy (script-src 'self').
        context = chromium.new_context(base_url=server.url, viewport=viewport, bypass_csp=True)
        try:
            tab = context.new_page()
            tab.goto("/dashboard/login")
            found = {"/dashboard/login": _axe(tab, source)}
            sign_in(tab, email)
            for path in pages:
                tab.goto(path)
                found[path] = _axe(tab, source)
            serious = {path: issues for path, issues in found.items() if issues}
            assert not serious, (viewport, serious)
        finally:
            context.close()


def _axe(page: Any, source: str) -> list[str]:
    page.evaluate(source)
    result = page.evaluate("async () => await axe.run(document)")
    return [
        f"{violation['id']}: {violation['help']} ({len(violation['nodes'])} nodes, e.g. "
        f"{violation['nodes'][0]['html'][:120]})"
        for violation in result["violations"]
        if violation["impact"] in ("serious", "critical")
    ]
