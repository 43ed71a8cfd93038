"""Product signals against a real server process: concurrent batches that create the same
new products, and move them between categories, lose no unit and leave the category
rollups as a rebuild from the facts computes them.

Each transaction adds to a product in one upsert that reads back the category it replaced
(`previous_category`): a batch that waited for another's new row must move the units that
batch committed, under the category that batch gave."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from returnstack.products.rebuild import rebuild
from tests.conftest import DatabaseFixture, TenantFixture
from tests.e2e import Server
from tests.factories import batch, item, purchase, unique
from tests.returns.test_concurrency import poster, together

pytestmark = pytest.mark.e2e

BATCHES = 8
CATEGORIES = ["Apparel/Tops", "Apparel/Bottoms", "Shoes", "Home/Kitchen/Pots"]


@pytest.fixture(scope="module")
def server(database: DatabaseFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir: Path = tmp_path_factory.mktemp(f"products-server-{database.backend}")
    with Server(database.url, workdir) as running:
        yield running


def test_concurrent_batches_on_new_products_agree_with_the_rebuild(
    server: Server, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    products = [unique("SKU") for _ in range(3)]
    start = datetime(2026, 6, 1, tzinfo=UTC)
    calls = []
    for number in range(BATCHES):
        # Every batch sells every product (new to all of them at first), each under its
        # own category and time: the latest batch's category wins, whichever commits last.
        at = (start + timedelta(hours=number)).isoformat()
        category = CATEGORIES[number % len(CATEGORIES)]
        events = [
            purchase(
                timestamp=at,
                items=[
                    item(product_id=product, quantity=1 + number % 2, category=category)
                    for product in products
                ],
            )
        ]
        calls.append(poster("/v1/events", batch(*events)))
    responses = together(server, tenant, calls)
    assert [response.status_code for response in responses] == [200] * BATCHES

    # Units: 1 or 2 per batch, alternately: 4 batches of each over 8.
    latest = CATEGORIES[(BATCHES - 1) % len(CATEGORIES)]
    with httpx.Client(base_url=server.url, headers=tenant.headers) as http:
        for product in products:
            stats = http.get(f"/v1/products/{product}/stats").json()
            assert stats["units_sold"] == 4 * 1 + 4 * 2
            assert stats["category"] == latest
            # Every ancestor of the winning category holds all three products' units.
            assert [row["units_sold"] for row in stats["categories"]] == [36] * len(
                stats["categories"]
            )
    with database.db.transaction() as session:
        report = rebuild(session, tenant_id=tenant.id, write=False)
    assert report.differences == 0, report.examples
