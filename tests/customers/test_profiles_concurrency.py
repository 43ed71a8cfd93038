"""Profiles against a real server process: concurrent batches for one customer (and a guest
being linked meanwhile) lose no update and agree with a rebuild from the facts."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from returnstack.customers.profiles import rebuild
from tests.conftest import DatabaseFixture, TenantFixture
from tests.e2e import Server
from tests.factories import batch, item, purchase, unique
from tests.returns.test_concurrency import poster, together

pytestmark = pytest.mark.e2e

BATCHES = 12
PER_BATCH = 5


@pytest.fixture(scope="module")
def server(database: DatabaseFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir: Path = tmp_path_factory.mktemp(f"profiles-server-{database.backend}")
    with Server(database.url, workdir) as running:
        yield running


def test_concurrent_batches_for_one_customer_all_count(
    server: Server, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    customer_id, email = unique("cust"), f"{unique('u')}@example.com"
    calls = []
    for number in range(BATCHES):
        # Half the batches know the customer by email alone; one of them links the two.
        customer = {"id": customer_id} if number % 2 else {"email": email}
        if number == BATCHES // 2:
            customer = {"id": customer_id, "email": email}
        events = [
            purchase(customer=customer, items=[item(quantity=1, unit_price=100)])
            for _ in range(PER_BATCH)
        ]
        calls.append(poster("/v1/events", batch(*events)))
    responses = together(server, tenant, calls)
    assert [response.status_code for response in responses] == [200] * BATCHES

    with httpx.Client(base_url=server.url, headers=tenant.headers) as http:
        body = http.get(f"/v1/customers/{customer_id}").json()
    totals = body["totals"]["EUR"]
    assert totals["orders"] == BATCHES * PER_BATCH
    assert totals["gross_revenue"] == BATCHES * PER_BATCH * 100
    with database.db.transaction() as session:
        report = rebuild(session, tenant_id=tenant.id, write=False)
    assert report.differences == 0, report.examples
