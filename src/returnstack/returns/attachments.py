"""Attachments of returns: photos and documents as evidence (API.md 4).

JPEG, PNG, WebP or PDF, recognised by their first bytes (never by the name or the declared
type), at most 10 MB each. The bytes live in an `AttachmentStorage` (files under the data
directory by default; anything with put/open/delete, such as an S3-compatible bucket, fits
behind the same three methods); the row in `attachments` is written in the request's
transaction, and the stored file is removed again if that transaction rolls back.
"""

import hashlib
import logging
import os
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from returnstack.config import Settings
from returnstack.kit.errors import NotFound, PayloadTooLarge, ValidationFailed
from returnstack.kit.ids import new_id
from returnstack.models import Attachment, Return, Tenant
from returnstack.outbox.service import DomainEvent
from returnstack.outbox.service import record as record_domain_events
from returnstack.returns.repository import find_return, render_returns

log = logging.getLogger("returnstack.attachments")

MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
MAX_ATTACHMENTS_PER_RETURN = 20
CHUNK_BYTES = 64 * 1024
MAX_FILENAME_CHARS = 255

# Detected type -> the extension a download should carry.
EXTENSIONS = {
    "image/jpeg": (".jpg", ".jpeg"),
    "image/png": (".png",),
    "image/webp": (".webp",),
    "application/pdf": (".pdf",),
}


def detect_content_type(head: bytes) -> str | None:
    """The type of a file from its first bytes (at least 12), or None if not allowed."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    return None


def sanitize_filename(name: str | None, content_type: str) -> str:
    """A safe display name: no directories, no control characters, at most 255 characters,
    ending in an extension that matches the detected type (`photo.exe` -> `photo.exe.jpg`)."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        char for char in name if unicodedata.category(char)[0] != "C"
    )  # control, format, surrogate, private use, unassigned
    name = " ".join(name.split()).strip(" .")
    extensions = EXTENSIONS[content_type]
    _, dot, suffix = name.rpartition(".")
    if not name:
        name = "attachment" + extensions[0]
    elif not dot or f".{suffix.lower()}" not in extensions:
        name += extensions[0]
    if len(name) > MAX_FILENAME_CHARS:
        extension = "." + name.rsplit(".", 1)[-1]
        name = name[: MAX_FILENAME_CHARS - len(extension)].rstrip(" .") + extension
    return name


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the exact name in RFC 5987 form."""
    fallback = "".join(
        char if 32 <= ord(char) < 127 and char not in '"\\%;' else "_" for char in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


# --- storage -------------------------------------------------------------------------------


class AttachmentStorage(Protocol):
    """Where attachment bytes live. Keys are made by the server (`attachments/<tenant>/...`)."""

    def put(self, key: str, chunks: Iterable[bytes]) -> None:
        """Store the chunks under `key`, all or nothing: if iterating the chunks raises,
        nothing is left behind and the error propagates."""

    def open(self, key: str) -> BinaryIO:
        """The stored bytes; FileNotFoundError when there are none."""

    def delete(self, key: str) -> None:
        """Remove the stored bytes; no error when there are none."""


class LocalStorage:
    """Files under a root directory: written to a temporary file in the target directory,
    flushed to disk, then renamed into place, so a reader never sees half a file."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"storage key {key!r} leaves the storage root")
        return path

    def put(self, key: str, chunks: Iterable[bytes]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def delete(self, key: str) -> None:
        with suppress(FileNotFoundError):
            self._path(key).unlink()


def storage_from_settings(settings: Settings) -> AttachmentStorage:
    """The configured store. Only local files exist today; an S3-compatible store would be
    chosen here from a setting (e.g. a bucket URL) and implement the same three methods."""
    return LocalStorage(settings.data_dir)


# --- service -------------------------------------------------------------------------------


def storage_key(tenant_id: str, return_id: str, attachment_id: str) -> str:
    return f"attachments/{tenant_id}/{return_id}/{attachment_id}"


def staff_url(return_id: str, attachment_id: str) -> str:
    return f"/v1/returns/{return_id}/attachments/{attachment_id}"


class _Reader:
    """Reads an upload in chunks, counting and hashing, refusing more than the limit."""

    def __init__(self, source: BinaryIO, head: bytes) -> None:
        self.source = source
        self.head = head
        self.size = 0
        self.digest = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        chunk = self.head
        while chunk:
            self.size += len(chunk)
            if self.size > MAX_ATTACHMENT_BYTES:
                raise PayloadTooLarge(
                    f"An attachment may be at most {MAX_ATTACHMENT_BYTES} bytes.",
                    details=[
                        {"path": "file", "message": f"larger than {MAX_ATTACHMENT_BYTES} bytes"}
                    ],
                )
            self.digest.update(chunk)
            yield chunk
            chunk = self.source.read(CHUNK_BYTES)


def _read_head(source: BinaryIO) -> tuple[bytes, str]:
    head = source.read(CHUNK_BYTES)
    content_type = detect_content_type(head)
    if content_type is None:
        raise ValidationFailed(
            "Attachments must be JPEG, PNG, WebP or PDF files.",
            details=[
                {
                    "path": "file",
                    "message": "the content is not a JPEG, PNG, WebP or PDF file",
                    "code": "unsupported_file_type",
                }
            ],
        )
    return head, content_type


def _check_quota(session: Session, *, tenant_id: str, size: int, quota_bytes: int) -> None:
    """413 when a file of `size` bytes would take the tenant's attachments past
    `quota_bytes` (0: no quota). The tenant's row is locked first (on PostgreSQL; SQLite
    writers hold the write lock), so two uploads at once cannot both take the last bytes."""
    if not quota_bytes:
        return
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    used = session.scalar(
        select(func.coalesce(func.sum(Attachment.size), 0)).where(Attachment.tenant_id == tenant_id)
    )
    if (used or 0) + size > quota_bytes:
        raise PayloadTooLarge(
            f"This upload would exceed the tenant's attachment storage quota of {quota_bytes} "
            "bytes; delete returns' files or raise RETURNSTACK_ATTACHMENT_QUOTA_BYTES.",
            details=[
                {
                    "path": "file",
                    "message": f"{used} of {quota_bytes} bytes are used; this file has {size}",
                    "code": "quota_exceeded",
                }
            ],
        )


def _remove_on_rollback(session: Session, storage: AttachmentStorage, key: str) -> None:
    def remove(_session: Session) -> None:
        try:
            storage.delete(key)
        except Exception:  # never hide the error that caused the rollback
            log.exception("attachment.cleanup_failed", extra={"storage_key": key})

    event.listen(session, "after_rollback", remove, once=True)


def add_attachment(
    session: Session,
    *,
    storage: AttachmentStorage,
    ret: Return,
    source: BinaryIO,
    filename: str | None,
    quota_bytes: int,
    url: Callable[[str, str], str] = staff_url,
) -> dict[str, Any]:
    """Store an uploaded file on a return (whose row the caller locked) and answer the
    attachment object. The return's version goes up: its representation changed."""
    count = session.scalar(
        select(func.count())
        .select_from(Attachment)
        .where(Attachment.tenant_id == ret.tenant_id, Attachment.return_id == ret.id)
    )
    if (count or 0) >= MAX_ATTACHMENTS_PER_RETURN:
        raise ValidationFailed(
            f"A return may have at most {MAX_ATTACHMENTS_PER_RETURN} attachments.",
            details=[
                {
                    "path": "file",
                    "message": f"the return already has {count} attachments",
                    "code": "too_many_attachments",
                }
            ],
        )
    head, content_type = _read_head(source)
    position = source.tell()
    size = source.seek(0, os.SEEK_END) - (position - len(head))
    source.seek(position)
    _check_quota(session, tenant_id=ret.tenant_id, size=size, quota_bytes=quota_bytes)
    attachment_id = new_id("att")
    key = storage_key(ret.tenant_id, ret.id, attachment_id)
    reader = _Reader(source, head)
    storage.put(key, reader)
    _remove_on_rollback(session, storage, key)
    now = datetime.now(UTC)
    row = Attachment(
        tenant_id=ret.tenant_id,
        id=attachment_id,
        return_id=ret.id,
        filename=sanitize_filename(filename, content_type),
        content_type=content_type,
        size=reader.size,
        sha256=reader.digest.hexdigest(),
        storage_key=key,
        created_at=now,
    )
    session.add(row)
    ret.version += 1
    ret.updated_at = now
    session.flush()
    attachment = {
        "id": row.id,
        "filename": row.filename,
        "content_type": row.content_type,
        "size": row.size,
        "url": url(ret.id, row.id),
    }
    rendered = render_returns(session, tenant_id=ret.tenant_id, returns=[ret])[0]
    record_domain_events(
        session,
        tenant_id=ret.tenant_id,
        events=[
            DomainEvent(
                type="return.updated",
                data=rendered,
                changes={"attachments": [None, attachment | {"url": staff_url(ret.id, row.id)}]},
            )
        ],
    )
    log.info(
        "attachment.added",
        extra={"tenant_id": ret.tenant_id, "return_id": ret.id, "attachment_id": row.id},
    )
    return attachment


def attach_to_return(
    session: Session,
    *,
    storage: AttachmentStorage,
    tenant_id: str,
    reference: str,
    source: BinaryIO,
    filename: str | None,
    quota_bytes: int,
) -> dict[str, Any]:
    """Staff upload: the return by id or number, locked for the transaction."""
    ret = find_return(session, tenant_id=tenant_id, reference=reference, for_update=True)
    return add_attachment(
        session,
        storage=storage,
        ret=ret,
        source=source,
        filename=filename,
        quota_bytes=quota_bytes,
    )


def find_attachment(session: Session, *, ret: Return, attachment_id: str) -> Attachment:
    row = None
    if "\x00" not in attachment_id:
        row = session.scalar(
            select(Attachment).where(
                Attachment.tenant_id == ret.tenant_id,
                Attachment.return_id == ret.id,
                Attachment.id == attachment_id,
            )
        )
    if row is None:
        raise NotFound(f"No attachment {attachment_id!r} on this return.")
    return row


def open_attachment(storage: AttachmentStorage, row: Attachment) -> BinaryIO:
    try:
        return storage.open(row.storage_key)
    except FileNotFoundError:
        log.error(
            "attachment.file_missing",
            extra={"tenant_id": row.tenant_id, "attachment_id": row.id, "key": row.storage_key},
        )
        raise NotFound(f"The file of attachment {row.id!r} is missing from storage.") from None


def download_headers(row: Attachment) -> dict[str, str]:
    return {
        "Content-Disposition": content_disposition(row.filename),
        "Content-Length": str(row.size),
        "ETag": f'"{row.sha256}"',
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-cache",
    }


def iter_file(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk
