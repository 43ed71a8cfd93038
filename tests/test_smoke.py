from fastapi.testclient import TestClient

from tests.conftest import TenantFixture
from tests.factories import batch, purchase


def test_a_purchase_becomes_an_order(client: TestClient, tenant: TenantFixture) -> None:
    event = purchase()
    response = client.post("/v1/events", json=batch(event), headers=tenant.headers)
    assert response.status_code == 200, response.text
    order = client.get(f"/v1/orders/{event['order_id']}", headers=tenant.headers)
    assert order.status_code == 200
    assert order.json()["lines"][0]["returnable_quantity"] == 1
