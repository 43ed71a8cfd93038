"""The vendors' own code against a real server process, with only the host changed:
Sailthru's Python client (sailthru-client signs its requests itself), Constructor's Node
client (tracker.trackPurchase: a text/plain JSON body repeating the common parameters, the
secret token as x-cnstrc-token), and the one request per vendor that `returnstack demo`
prints, run as the shell commands it prints."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from sailthru.sailthru_client import SailthruClient

from returnstack.compat.examples import vendor_requests
from tests.conftest import DatabaseFixture, TenantFixture
from tests.e2e import Server
from tests.factories import unique


def test_sailthrus_python_client_against_a_real_server(
    database: DatabaseFixture, tenant: TenantFixture, tmp_path: Path
) -> None:
    email, extid = f"{unique('u')}@example.com", unique("st")
    items = [
        {"id": "A1", "title": "Mug", "price": 3499, "qty": 1, "url": "https://example.com/a1"},
        {"id": "B2", "title": "Tee", "price": 1799, "qty": 2, "url": "https://example.com/b2"},
    ]
    with Server(database.url, tmp_path / "server") as server:
        sailthru = SailthruClient(tenant.publishable_key, tenant.signing_secret, api_url=server.url)
        response = sailthru.purchase(
            email,
            items=items,
            extid=extid,
            options={"date": "2026-02-14 09:30:00 America/New_York"},
        )
        assert response.is_ok(), response.get_body()
        assert sailthru.get_last_rate_limit_info("purchase", "POST") is not None
        response = sailthru.api_post(
            "return",
            {
                "email": email,
                "items": [
                    {
                        "qty": 1,
                        "price": 1799,
                        "id": "B2",
                        "url": "https://example.com/b2",
                        "order_id": extid,
                    }
                ],
            },
        )
        assert response.is_ok(), response.get_body()

        impostor = SailthruClient(tenant.publishable_key, "not the secret", api_url=server.url)
        refused = impostor.purchase(email, items=items, extid=unique("st"))
        assert not refused.is_ok()
        assert refused.get_status_code() == 401
        assert refused.get_error().get_error_code() == 5

        with httpx.Client(base_url=server.url, headers=tenant.headers) as http:
            order = http.get(f"/v1/orders/{extid}").json()
            assert order["placed_at"] == "2026-02-14T14:30:00Z"
            assert [(line["quantity"], line["returned_quantity"]) for line in order["lines"]] == [
                (1, 0),
                (2, 1),
            ]
            totals = http.get("/v1/customers/lookup", params={"email": email}).json()["totals"]
            assert totals["EUR"]["net_revenue"] == 3499 + 2 * 1799 - 1799


def test_the_demos_vendor_requests_work_as_printed(
    database: DatabaseFixture, tenant: TenantFixture, tmp_path: Path
) -> None:
    expected = {"Constructor": "204", "Sailthru": "200", "Optimove": "200", "Emporix": "200"}
    with Server(database.url, tmp_path / "server") as server:
        commands = vendor_requests(
            server.url,
            tenant_name=tenant.name,
            signing_secret=tenant.signing_secret,
            secret_key=tenant.secret_key,
            publishable_key=tenant.publishable_key,
        )
        for vendor, command in commands:
            result = subprocess.run(
                ["bash", "-c", f"{command} -o /dev/null -w '%{{http_code}}'"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert result.stdout.strip() == expected[vendor], (vendor, result.stdout, result.stderr)


CONSTRUCTOR_NODE = "@constructor-io/constructorio-node@5.4.1"
CLIENTS = Path(__file__).with_name("clients")


@pytest.fixture(scope="session")
def constructor_node_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Constructor's Node client, installed from the npm registry for this test session."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.fail("node and npm are needed to run Constructor's own client")
    where = tmp_path_factory.mktemp("constructor-node")
    subprocess.run(
        [
            "npm",
            "install",
            "--silent",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(where),
            CONSTRUCTOR_NODE,
        ],
        check=True,
        timeout=240,
        capture_output=True,
    )
    return where / "node_modules"


def test_constructors_node_client_against_a_real_server(
    database: DatabaseFixture, tenant: TenantFixture, tmp_path: Path, constructor_node_client: Path
) -> None:
    order_id, user = unique("ORDER"), unique("u")
    args = {
        "parameters": {
            "orderId": order_id,
            "revenue": 69.97,
            "items": [
                {
                    "itemId": "KMH876",
                    "variationId": "KMH876-RED-L",
                    "itemName": "Red T-Shirt",
                    "price": 29.99,
                    "count": 1,
                },
                {"itemId": "KMH140", "price": 19.99, "count": 2},
            ],
            "analyticsTags": {"app": "web"},
        },
        "userParameters": {
            "sessionId": 1,
            "clientId": "6c73138f-c87b-49f0-872d-63b00ed0e395",
            "userId": user,
            "segments": ["vip"],
            "testCells": {"ranking": "b"},
            "originReferrer": "https://shop.example/cart",
        },
    }
    with Server(database.url, tmp_path / "server") as server:
        result = subprocess.run(
            [
                "node",
                str(CLIENTS / "constructor_track_purchase.js"),
                server.url,
                tenant.publishable_key,
                tenant.secret_key,
                json.dumps(args),
            ],
            env=os.environ | {"NODE_PATH": str(constructor_node_client)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        with httpx.Client(base_url=server.url, headers=tenant.headers) as http:
            order = http.get(f"/v1/orders/{order_id}").json()
    assert order["customer"]["id"] == user
    assert order["channel"] == "online"
    assert [
        (line["product_id"], line["variant_id"], line["quantity"], line["unit_price"])
        for line in order["lines"]
    ] == [
        ("KMH876", "KMH876-RED-L", 1, 2999),
        ("KMH140", None, 2, 1999),
    ]
