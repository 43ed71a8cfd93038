"""Attachments of returns (API.md 4, 4.1, 11): multipart field `file`; JPEG, PNG, WebP or
PDF recognised by content; at most 10 MB; stored under the data directory; downloaded by
the tenant's staff or the return's own customer, by nobody else."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from fastapi.testclient import TestClient

from returnstack.app import create_app
from returnstack.models import Return
from returnstack.returns import attachments
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import unique
from tests.storefront.test_storefront import (
    HEADER,
    buy,
    customer_headers,
    email,
    guest_headers,
    open_return,
    wanted,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"png-body" * 100
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"jpeg-body" * 100
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"webp-body" * 100
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + b"pdf-body" * 100
MAX = attachments.MAX_ATTACHMENT_BYTES


@pytest.fixture
def customer(client: TestClient, tenant: TenantFixture) -> dict[str, Any]:
    """A customer with an open storefront return: its id, session headers and return."""
    customer_id = unique("cust")
    order = buy(client, tenant, customer_id=customer_id, email_address=email())
    headers = customer_headers(client, tenant, customer_id)
    return {
        "id": customer_id,
        "headers": headers,
        "return": open_return(client, headers, wanted(order)),
    }


def upload(
    client: TestClient,
    path: str,
    headers: dict[str, str],
    content: bytes,
    *,
    filename: str = "photo.png",
    content_type: str = "image/png",
    expect: int = 201,
) -> httpx.Response:
    response = client.post(path, files={"file": (filename, content, content_type)}, headers=headers)
    assert response.status_code == expect, response.text
    return response


def staff_path(ret: dict[str, Any]) -> str:
    return f"/v1/returns/{ret['id']}/attachments"


def storefront_path(ret: dict[str, Any]) -> str:
    return f"/v1/storefront/returns/{ret['id']}/attachments"


def stored_files(database: DatabaseFixture, tenant: TenantFixture) -> list[Path]:
    root = database.settings.data_dir / "attachments" / tenant.id
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


# --- staff ---------------------------------------------------------------------------------


def test_staff_upload_and_download(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture, customer: dict[str, Any]
) -> None:
    ret = customer["return"]
    response = upload(client, staff_path(ret), tenant.headers, PNG, filename="label.png")
    attachment = response.json()
    assert set(attachment) == {"id", "filename", "content_type", "size", "url"}
    assert attachment["id"].startswith("att_")
    assert (attachment["filename"], attachment["content_type"], attachment["size"]) == (
        "label.png",
        "image/png",
        len(PNG),
    )
    assert attachment["url"] == f"/v1/returns/{ret['id']}/attachments/{attachment['id']}"

    # On disk where the documentation says, and nowhere else.
    expected = database.settings.data_dir / "attachments" / tenant.id / ret["id"] / attachment["id"]
    assert stored_files(database, tenant) == [expected]
    assert expected.read_bytes() == PNG

    staff_view = client.get(f"/v1/returns/{ret['id']}", headers=tenant.headers).json()
    assert staff_view["attachments"] == [attachment]
    assert staff_view["version"] == ret["version"] + 1

    download = client.get(attachment["url"], headers=tenant.headers)
    assert download.status_code == 200, download.text
    assert download.content == PNG
    assert download.headers["content-type"] == "image/png"
    assert download.headers["content-disposition"].startswith('attachment; filename="label.png"')
    assert download.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("content", "declared_name", "declared_type", "content_type", "filename"),
    [
        (JPEG, "IMG_0001.JPG", "image/jpeg", "image/jpeg", "IMG_0001.JPG"),
        (WEBP, "a.webp", "application/octet-stream", "image/webp", "a.webp"),
        (PDF, "receipt.pdf", "application/pdf", "application/pdf", "receipt.pdf"),
        (PDF, "receipt.png", "image/png", "application/pdf", "receipt.png.pdf"),
        (PNG, "../../etc/passwd", "image/png", "image/png", "passwd.png"),
        (PNG, "C:\\Users\\ann\\scan.png", "image/png", "image/png", "scan.png"),
        (PNG, "...", "image/png", "image/png", "attachment.png"),
        (JPEG, "photo.exe", "image/jpeg", "image/jpeg", "photo.exe.jpg"),
    ],
)
def test_the_type_comes_from_the_content_and_the_name_is_made_safe(
    client: TestClient,
    tenant: TenantFixture,
    customer: dict[str, Any],
    content: bytes,
    declared_name: str,
    declared_type: str,
    content_type: str,
    filename: str,
) -> None:
    ret = customer["return"]
    response = upload(
        client,
        staff_path(ret),
        tenant.headers,
        content,
        filename=declared_name,
        content_type=declared_type,
    )
    body = response.json()
    assert (body["content_type"], body["filename"]) == (content_type, filename)
    download = client.get(body["url"], headers=tenant.headers)
    assert download.headers["content-type"] == content_type
    assert download.content == content


def test_a_non_ascii_or_quoted_name_is_encoded_safely_in_the_download(
    client: TestClient, tenant: TenantFixture, customer: dict[str, Any]
) -> None:
    name = 'Fotó "1"; name=evil €.png'
    body = upload(client, staff_path(customer["return"]), tenant.headers, PNG, filename=name).json()
    stored = body["filename"]
    assert stored.startswith("Fotó ")
    assert stored.endswith(" €.png")
    download = client.get(body["url"], headers=tenant.headers)
    disposition = download.headers["content-disposition"]
    fallback, exact = disposition.split("; filename*=UTF-8''")
    assert fallback.startswith('attachment; filename="')
    assert fallback.endswith('"')
    inner = fallback.removeprefix('attachment; filename="').removesuffix('"')
    assert inner.isascii()
    assert not set(inner) & set('"\\;%')
    assert unquote(exact) == stored
    assert exact == quote(stored, safe="")


@pytest.mark.parametrize(
    ("content", "filename", "content_type"),
    [
        (b"just some text, honestly a JPEG", "photo.jpg", "image/jpeg"),
        (b"<html><script>alert(1)</script></html>", "page.png", "image/png"),
        (b"GIF89a" + b"\x00" * 50, "anim.gif", "image/gif"),
        (b"", "empty.png", "image/png"),
        (b"\x89PN", "short.png", "image/png"),
    ],
)
def test_a_disguised_or_unsupported_file_is_422_naming_file(
    client: TestClient,
    tenant: TenantFixture,
    database: DatabaseFixture,
    customer: dict[str, Any],
    content: bytes,
    filename: str,
    content_type: str,
) -> None:
    ret = customer["return"]
    response = upload(
        client,
        staff_path(ret),
        tenant.headers,
        content,
        filename=filename,
        content_type=content_type,
        expect=422,
    )
    error = response.json()["error"]
    assert error["type"] == "validation_failed"
    assert [d["path"] for d in error["details"]] == ["file"]
    assert (
        client.get(f"/v1/returns/{ret['id']}", headers=tenant.headers).json()["attachments"] == []
    )
    assert stored_files(database, tenant) == []


def test_the_file_must_be_the_multipart_field_file(
    client: TestClient, tenant: TenantFixture, customer: dict[str, Any]
) -> None:
    path = staff_path(customer["return"])
    wrong_field = client.post(
        path, files={"photo": ("a.png", PNG, "image/png")}, headers=tenant.headers
    )
    as_text = client.post(path, data={"file": "not a file"}, headers=tenant.headers)
    as_json = client.post(path, json={"file": "x"}, headers=tenant.headers)
    for response in (wrong_field, as_text, as_json):
        assert response.status_code == 422, response.text
        assert [d["path"] for d in response.json()["error"]["details"]] == ["file"]


@pytest.fixture
def roomy_client(database: DatabaseFixture) -> Iterator[TestClient]:
    """The app with a request body limit above the attachment limit, so the attachment
    limit itself answers (the default body limit is lower; see the test below)."""
    settings = database.settings.model_copy(update={"max_body_bytes": 3 * MAX})
    with TestClient(create_app(settings, database=database.db)) as roomy:
        yield roomy


def test_ten_megabytes_are_accepted_and_one_byte_more_is_413(
    roomy_client: TestClient,
    tenant: TenantFixture,
    database: DatabaseFixture,
    customer: dict[str, Any],
) -> None:
    ret = customer["return"]
    exactly = PNG + b"\x00" * (MAX - len(PNG))
    body = upload(roomy_client, staff_path(ret), tenant.headers, exactly).json()
    assert body["size"] == MAX
    too_large = upload(roomy_client, staff_path(ret), tenant.headers, exactly + b"\x00", expect=413)
    error = too_large.json()["error"]
    assert error["type"] == "payload_too_large"
    assert [d["path"] for d in error["details"]] == ["file"]
    assert len(stored_files(database, tenant)) == 1
    view = roomy_client.get(f"/v1/returns/{ret['id']}", headers=tenant.headers).json()
    assert [a["id"] for a in view["attachments"]] == [body["id"]]


def test_a_too_large_upload_is_413_with_the_default_settings(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture, customer: dict[str, Any]
) -> None:
    content = PNG + b"\x00" * MAX
    response = upload(client, staff_path(customer["return"]), tenant.headers, content, expect=413)
    assert response.json()["error"]["type"] == "payload_too_large"
    assert stored_files(database, tenant) == []


def test_an_idempotent_upload_is_stored_once(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture, customer: dict[str, Any]
) -> None:
    ret = customer["return"]
    headers = tenant.headers | {"Idempotency-Key": unique("k")}
    first = upload(client, staff_path(ret), headers, PNG).json()
    replay = upload(client, staff_path(ret), headers, PNG)
    assert replay.json() == first
    assert replay.headers.get("idempotent-replayed") == "true"
    assert len(stored_files(database, tenant)) == 1
    other_file = upload(client, staff_path(ret), headers, JPEG, expect=409)
    assert other_file.json()["error"]["type"] == "conflict"
    assert len(stored_files(database, tenant)) == 1


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("tab\there\x07.exe", "image/jpeg", "tabhere.exe.jpg"),
        ("line\r\nbreak.pdf", "application/pdf", "linebreak.pdf"),
        ("zero\u200bwidth\x00.png", "image/png", "zerowidth.png"),
        ("  spaced   out  .PNG ", "image/png", "spaced out .PNG"),
        (None, "image/webp", "attachment.webp"),
        ("x" * 300 + ".jpeg", "image/jpeg", "x" * 250 + ".jpeg"),
        ("/", "application/pdf", "attachment.pdf"),
    ],
)
def test_sanitize_filename(name: str | None, content_type: str, expected: str) -> None:
    assert attachments.sanitize_filename(name, content_type) == expected


def test_at_most_twenty_attachments_per_return(
    client: TestClient, tenant: TenantFixture, customer: dict[str, Any]
) -> None:
    path = staff_path(customer["return"])
    for _ in range(attachments.MAX_ATTACHMENTS_PER_RETURN):
        upload(client, path, tenant.headers, PNG)
    response = upload(client, path, tenant.headers, PNG, expect=422)
    assert response.json()["error"]["details"][0]["code"] == "too_many_attachments"


def test_staff_attachments_need_a_secret_key(
    client: TestClient, tenant: TenantFixture, customer: dict[str, Any]
) -> None:
    ret = customer["return"]
    attachment = upload(client, staff_path(ret), tenant.headers, PNG).json()
    for headers, status in (
        (tenant.publishable_headers, 403),
        ({}, 401),
        (customer["headers"], 401),
    ):
        response = client.get(attachment["url"], headers=headers)
        assert response.status_code == status, response.text
        upload(client, staff_path(ret), headers, PNG, expect=status)
        # Who asks is checked before what was sent.
        assert client.post(staff_path(ret), headers=headers).status_code == status


def test_another_tenant_can_neither_download_nor_upload(
    client: TestClient,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
    database: DatabaseFixture,
    customer: dict[str, Any],
) -> None:
    ret = customer["return"]
    attachment = upload(client, staff_path(ret), tenant.headers, PNG).json()
    response = client.get(attachment["url"], headers=other_tenant.headers)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["type"] == "not_found"
    upload(client, staff_path(ret), other_tenant.headers, PNG, expect=404)
    assert stored_files(database, other_tenant) == []


def test_unknown_attachment_or_return_is_404(
    client: TestClient, tenant: TenantFixture, customer: dict[str, Any]
) -> None:
    ret = customer["return"]
    attachment = upload(client, staff_path(ret), tenant.headers, PNG).json()
    other = open_return(
        client,
        customer["headers"],
        wanted(buy(client, tenant, customer_id=customer["id"])),
    )
    for path in (
        f"/v1/returns/{ret['id']}/attachments/att_unknown",
        f"/v1/returns/ret_unknown/attachments/{attachment['id']}",
        f"/v1/returns/{other['id']}/attachments/{attachment['id']}",  # not of that return
    ):
        assert client.get(path, headers=tenant.headers).status_code == 404, path
    upload(client, "/v1/returns/ret_unknown/attachments", tenant.headers, PNG, expect=404)


# --- storefront ----------------------------------------------------------------------------


def test_the_owner_uploads_and_downloads_on_the_storefront(
    client: TestClient, tenant: TenantFixture, customer: dict[str, Any]
) -> None:
    ret, headers = customer["return"], customer["headers"]
    attachment = upload(client, storefront_path(ret), headers, JPEG, filename="seam.jpg").json()
    assert attachment["url"] == f"{storefront_path(ret)}/{attachment['id']}"
    assert attachment["content_type"] == "image/jpeg"
    download = client.get(attachment["url"], headers=headers)
    assert download.status_code == 200, download.text
    assert download.content == JPEG
    assert download.headers["content-type"] == "image/jpeg"
    view = client.get(f"/v1/storefront/returns/{ret['id']}", headers=headers).json()
    assert view["attachments"] == [attachment]
    # Staff see it too, under the staff URL.
    staff = client.get(f"/v1/returns/{ret['id']}", headers=tenant.headers).json()
    (staff_attachment,) = staff["attachments"]
    assert staff_attachment["url"] == f"{staff_path(ret)}/{attachment['id']}"
    assert client.get(staff_attachment["url"], headers=tenant.headers).content == JPEG
    # And what staff attach, the owner can download.
    by_staff = upload(client, staff_path(ret), tenant.headers, PDF, filename="label.pdf").json()
    download = client.get(f"{storefront_path(ret)}/{by_staff['id']}", headers=headers)
    assert download.status_code == 200
    assert download.content == PDF


def test_a_guest_attaches_to_their_return(client: TestClient, tenant: TenantFixture) -> None:
    address = email()
    order = buy(client, tenant, email_address=address)
    headers = guest_headers(client, tenant, order["order_id"], address)
    ret = open_return(client, headers, wanted(order))
    attachment = upload(client, storefront_path(ret), headers, WEBP, filename="x.webp").json()
    assert client.get(attachment["url"], headers=headers).content == WEBP


def test_another_customer_can_neither_download_nor_upload(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture, customer: dict[str, Any]
) -> None:
    ret = customer["return"]
    attachment = upload(client, storefront_path(ret), customer["headers"], PNG).json()
    bob = unique("cust")
    buy(client, tenant, customer_id=bob)
    address = email()
    guest_order = buy(client, tenant, email_address=address)
    strangers = [
        customer_headers(client, tenant, bob),
        guest_headers(client, tenant, guest_order["order_id"], address),
    ]
    for headers in strangers:
        response = client.get(attachment["url"], headers=headers)
        assert response.status_code == 404, response.text
        upload(client, storefront_path(ret), headers, PNG, expect=404)
    assert len(stored_files(database, tenant)) == 1
    assert client.get(attachment["url"], headers={}).status_code == 401
    assert client.post(storefront_path(ret), headers={}).status_code == 401
    assert client.get(attachment["url"], headers={HEADER: "sfs_nope"}).status_code == 401


def test_no_storefront_uploads_once_the_return_is_cancelled(
    client: TestClient, tenant: TenantFixture, customer: dict[str, Any]
) -> None:
    ret, headers = customer["return"], customer["headers"]
    response = client.post(f"/v1/storefront/returns/{ret['id']}/cancel", headers=headers)
    assert response.status_code == 200, response.text
    conflict = upload(client, storefront_path(ret), headers, PNG, expect=409)
    assert conflict.json()["error"]["type"] == "conflict"
    upload(client, staff_path(ret), tenant.headers, PNG)  # staff still may


# --- the store and the transaction ---------------------------------------------------------


def test_the_file_is_removed_when_the_transaction_rolls_back(
    tenant: TenantFixture, database: DatabaseFixture, customer: dict[str, Any], tmp_path: Path
) -> None:
    storage = attachments.LocalStorage(tmp_path)
    ret_id = customer["return"]["id"]

    class Boom(Exception):
        pass

    keys: list[str] = []

    def attach_then_fail() -> None:
        with database.db.transaction() as session:
            ret = session.get_one(Return, (tenant.id, ret_id))
            with (tmp_path / "upload").open("wb") as out:
                out.write(PNG)
            with (tmp_path / "upload").open("rb") as source:
                made = attachments.add_attachment(
                    session,
                    storage=storage,
                    ret=ret,
                    source=source,
                    filename="a.png",
                    quota_bytes=0,
                )
            keys.append(attachments.storage_key(tenant.id, ret_id, made["id"]))
            assert (tmp_path / keys[0]).read_bytes() == PNG
            raise Boom

    with pytest.raises(Boom):
        attach_then_fail()
    assert not (tmp_path / keys[0]).exists()
    assert list((tmp_path / "attachments").rglob("*")) == [
        tmp_path / "attachments" / tenant.id,
        tmp_path / "attachments" / tenant.id / ret_id,
    ]


def test_local_storage_puts_all_or_nothing_and_stays_in_its_root(tmp_path: Path) -> None:
    storage = attachments.LocalStorage(tmp_path / "root")

    def failing() -> Iterator[bytes]:
        yield b"half"
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        storage.put("attachments/t/r/a", failing())
    assert [p for p in (tmp_path / "root").rglob("*") if p.is_file()] == []
    storage.put("attachments/t/r/a", [b"one", b"two"])
    with storage.open("attachments/t/r/a") as handle:
        assert handle.read() == b"onetwo"
    storage.delete("attachments/t/r/a")
    storage.delete("attachments/t/r/a")  # deleting twice is fine
    with pytest.raises(FileNotFoundError):
        storage.open("attachments/t/r/a")
    with pytest.raises(ValueError, match="leaves the storage root"):
        storage.put("../outside", [b"x"])
