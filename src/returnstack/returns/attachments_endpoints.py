"""Attachments on returns, for staff: upload (multipart field `file`) and download."""

import hashlib
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import FormData, UploadFile

from returnstack.kit.deps import DbSession
from returnstack.kit.errors import (
    AuthenticationFailed,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ValidationFailed,
)
from returnstack.kit.idempotency import Idempotency, IdempotentRequest
from returnstack.kit.middleware import UPLOAD_BODY_BYTES
from returnstack.kit.openapi import errors
from returnstack.kit.responses import RawJSONResponse
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.returns import attachments
from returnstack.returns.dependencies import AttachmentId, ReturnId
from returnstack.returns.repository import find_return
from returnstack.returns.schemas import AttachmentOut
from returnstack.tenants.auth import SecretKey

router = APIRouter(route_class=RenderInThreadRoute, tags=["attachments"])

_storage_lock = threading.Lock()

MULTIPART_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "JPEG, PNG, WebP or PDF (recognised by content), "
                            "at most 10 MB.",
                        }
                    },
                }
            }
        },
    }
}


def get_storage(request: Request) -> attachments.AttachmentStorage:
    """The application's attachment store, made from its settings on first use."""
    state = request.app.state
    storage: attachments.AttachmentStorage | None = getattr(state, "attachment_storage", None)
    if storage is None:
        with _storage_lock:
            storage = getattr(state, "attachment_storage", None)
            if storage is None:
                storage = attachments.storage_from_settings(state.settings)
                state.attachment_storage = storage
    return storage


async def received_file(
    request: Request, _idempotency: Idempotency
) -> AsyncIterator[UploadFile | None]:
    """The multipart field `file`, received before the endpoint's transaction begins (so a
    slow upload never holds a database lock), and after the caller is authenticated (the
    endpoints name the caller first): nobody unknown makes the server read or parse a body.
    Depends on the Idempotency-Key dependency so that, when a key is sent, the body is read
    and kept before the form is parsed."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > UPLOAD_BODY_BYTES:
        raise PayloadTooLarge(
            f"The request body exceeds the limit of {UPLOAD_BODY_BYTES} bytes for uploads.",
            details=[{"path": "file", "message": f"larger than {UPLOAD_BODY_BYTES} bytes"}],
            headers={"Connection": "close"},  # the unread body is not worth draining
        )
    form: FormData = await request.form(max_files=1, max_fields=10)
    try:
        upload = form.get("file")
        yield upload if isinstance(upload, UploadFile) else None
    finally:
        await form.close()


def required_file(upload: Annotated[UploadFile | None, Depends(received_file)]) -> UploadFile:
    """The file, once the caller is known: a missing file is 422 only to those allowed to
    upload (authentication is checked first, as for every other endpoint)."""
    if upload is None:
        raise ValidationFailed(
            "Send the file as the multipart/form-data field 'file'.",
            details=[{"path": "file", "message": "a file is required", "code": "missing"}],
        )
    return upload


ReceivedFile = Annotated[UploadFile | None, Depends(received_file)]
Upload = Annotated[UploadFile, Depends(required_file)]


def content_fingerprint(request: Request, upload: UploadFile) -> str:
    """What Idempotency-Key compares for an upload: the path, the file name and the file's
    bytes. Not the raw body: a client that retries builds a new multipart boundary."""
    digest = hashlib.sha256(f"{request.method} {request.url.path}\n".encode())
    digest.update(f"{upload.filename or ''}\n".encode())
    upload.file.seek(0)
    while chunk := upload.file.read(attachments.CHUNK_BYTES):
        digest.update(chunk)
    upload.file.seek(0)
    return digest.hexdigest()


def upload_idempotency(
    request: Request, idempotency: Idempotency, upload: Upload
) -> IdempotentRequest:
    if idempotency.key is None:
        return idempotency
    return replace(idempotency, fingerprint=content_fingerprint(request, upload))


def quota_bytes(request: Request) -> int:
    """The tenant's attachment storage quota (RETURNSTACK_ATTACHMENT_QUOTA_BYTES)."""
    quota: int = request.app.state.settings.attachment_quota_bytes
    return quota


Storage = Annotated[attachments.AttachmentStorage, Depends(get_storage)]
QuotaBytes = Annotated[int, Depends(quota_bytes)]
UploadIdempotency = Annotated[IdempotentRequest, Depends(upload_idempotency)]

UPLOAD_ERRORS = errors(
    AuthenticationFailed, Forbidden, InvalidRequest, NotFound, PayloadTooLarge, ValidationFailed
)
DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file, with its Content-Type and Content-Disposition: attachment.",
        "content": {
            content_type: {"schema": {"type": "string", "format": "binary"}}
            for content_type in attachments.EXTENSIONS
        },
    },
    **errors(AuthenticationFailed, Forbidden, NotFound),
}


@router.post(
    "/v1/returns/{return_id}/attachments",
    status_code=201,
    response_model=AttachmentOut,
    responses=UPLOAD_ERRORS,
    openapi_extra=MULTIPART_BODY,
)
def upload_attachment(
    principal: SecretKey,  # first: nobody unknown makes the server read a body
    _received: ReceivedFile,  # then the body, received before the transaction begins
    return_id: ReturnId,
    session: DbSession,
    upload: Upload,
    idempotency: UploadIdempotency,
    storage: Storage,
    quota: QuotaBytes,
) -> RawJSONResponse:
    """Attach a photo or document (JPEG, PNG, WebP or PDF, told apart by their content, at
    most 10 MB; at most 20 per return) to a return. Other content is 422 naming `file`;
    a larger file is 413."""
    return idempotency.respond(
        session,
        tenant_id=principal.tenant_id,
        status_code=201,
        produce=lambda: attachments.attach_to_return(
            session,
            storage=storage,
            tenant_id=principal.tenant_id,
            reference=return_id,
            source=upload.file,
            filename=upload.filename,
            quota_bytes=quota,
        ),
    )


@router.get(
    "/v1/returns/{return_id}/attachments/{attachment_id}",
    response_class=StreamingResponse,
    responses=DOWNLOAD_RESPONSES,
)
def download_attachment(
    return_id: ReturnId,
    attachment_id: AttachmentId,
    principal: SecretKey,
    session: DbSession,
    storage: Storage,
) -> StreamingResponse:
    """Download an attachment of a return of this tenant."""
    ret = find_return(session, tenant_id=principal.tenant_id, reference=return_id)
    row = attachments.find_attachment(session, ret=ret, attachment_id=attachment_id)
    return stream(storage, row)


def stream(storage: attachments.AttachmentStorage, row: Any) -> StreamingResponse:
    handle = attachments.open_attachment(storage, row)
    return StreamingResponse(
        attachments.iter_file(handle),
        media_type=row.content_type,
        headers=attachments.download_headers(row),
    )
