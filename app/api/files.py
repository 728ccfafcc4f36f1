"""Files in the tenant's storage: `uploadFile` (GraphQL multipart request spec), `files`,
`file`, `deleteFile`, and `GET /files/<token>`, the signed download URL a File's `url` names.

Uploads arrive as multipart/form-data (the spec's `operations`, `map` and file parts; the
view enables them and refuses multipart requests without a header a plain HTML form cannot
send, app/api/app.py). Starlette parses the parts before the resolver runs, spooling each
file to a temporary file past 1 MiB, so an upload is never held whole in memory; the resolver
then streams it into the tenant's storage (app/files/service.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, BinaryIO
from urllib.parse import quote

import strawberry
from cross_web import FormData, StarletteRequestAdapter
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from strawberry.file_uploads import Upload

from app.api.context import Context
from app.api.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    QuotaExceededError,
    ValidationError,
)
from app.api.relay import Connection
from app.errors import DomainError, NotFound, ValidationFailed
from app.files.service import FileService, StoredFile, open_download
from app.settings import Settings
from app.steps.storage import CHUNK_BYTES


class BoundedFormAdapter(StarletteRequestAdapter):
    """Strawberry's request adapter whose multipart parsing takes what uploadFile needs and no
    more: one file part, the `operations` and `map` fields, each field at most `field_bytes`
    (MAX_REQUEST_BYTES, as a JSON body). Starlette's defaults (1,000 fields of 1 MiB, held in
    memory) would let one upload-sized body put that much into memory. Over a limit: 400."""

    def __init__(self, request: Request, field_bytes: int) -> None:
        super().__init__(request)
        self.field_bytes = field_bytes

    @property
    def request(self) -> Request:
        """The Starlette request (the upload gate finds the request's context in its scope)."""
        return self._request

    async def get_form_data(self) -> FormData:
        form = await self._request.form(max_files=1, max_fields=2, max_part_size=self.field_bytes)
        return FormData(files=form, form=form)


@strawberry.type(description="A file in the tenant's storage.")
class File:
    path: str = strawberry.field(description="Relative to the tenant's storage, `/`-separated.")
    size: float = strawberry.field(description="Bytes (a Float: GraphQL's Int ends at 2 GiB).")
    content_type: str = strawberry.field(
        description="Sniffed from the file's first bytes, never taken from an uploader."
    )
    modified_at: datetime
    stored: strawberry.Private[StoredFile]

    @classmethod
    def from_stored(cls, stored: StoredFile) -> File:
        return cls(
            path=stored.path,
            size=stored.size,
            content_type=stored.content_type,
            modified_at=stored.modified_at,
            stored=stored,
        )

    @strawberry.field(
        description="A download URL that works without the API key for FILE_URL_TTL_SECONDS "
        "(default 300): ask again for a fresh one rather than storing it."
    )
    def url(self, info: strawberry.Info[Context, None]) -> str:
        ctx = info.context
        grant = FileService(ctx.deps.settings, ctx.principal()).download(self.stored)
        return str(ctx.request.url_for("download_file", token=grant.token))


@strawberry.type
class DeletedFile:
    path: str


UploadFileResult = Annotated[
    File | ValidationError | ForbiddenError | ConflictError | QuotaExceededError,
    strawberry.union("UploadFileResult"),
]
DeleteFileResult = Annotated[
    DeletedFile | ValidationError | ForbiddenError | NotFoundError,
    strawberry.union("DeleteFileResult"),
]


def _service(info: strawberry.Info[Context, None]) -> FileService:
    return FileService(info.context.deps.settings, info.context.principal())


@strawberry.type
class FileQuery:
    @strawberry.field(description="Files under `prefix` (a path prefix), in path order.")
    async def files(
        self,
        info: strawberry.Info[Context, None],
        prefix: str | None = None,
        first: int | None = 20,
        after: str | None = None,
    ) -> Connection[File]:
        page = await _service(info).list(prefix, first, after)
        nodes = [File.from_stored(f) for f in page.items]
        return Connection.build(nodes, page.cursors, page.has_next, after is not None)

    @strawberry.field(description="One file by its path; null when there is none.")
    async def file(self, info: strawberry.Info[Context, None], path: str) -> File | None:
        try:
            return File.from_stored(await _service(info).get(path))
        except NotFound:
            return None


@strawberry.type
class FileMutation:
    @strawberry.mutation(
        description="Store an uploaded file at `path` (GraphQL multipart request spec); "
        "operators and admins. Over MAX_UPLOAD_BYTES, or past the tier's storage quota, it is "
        "refused; an existing file is replaced only with `overwrite: true`."
    )
    async def upload_file(
        self,
        info: strawberry.Info[Context, None],
        file: Upload,
        path: str,
        overwrite: bool = False,
    ) -> UploadFileResult:
        if not isinstance(file, UploadFile):  # a variable holding a string, not a file part
            raise ValidationFailed("`file` must be a file part of a multipart request")
        try:
            stored = await _service(info).upload(path, file.read, file.size, overwrite)
        finally:
            await file.close()  # its spooled temporary file, now rather than at collection
        return File.from_stored(stored)

    @strawberry.mutation(description="Delete one file; operators and admins.")
    async def delete_file(
        self, info: strawberry.Info[Context, None], path: str
    ) -> DeleteFileResult:
        return DeletedFile(path=await _service(info).delete(path))


async def _chunks(src: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(src.read, CHUNK_BYTES):
            yield chunk
    finally:
        await asyncio.to_thread(src.close)


def download_endpoint(settings: Settings):  # type: ignore[no-untyped-def]
    """`GET /files/<token>`: the file a signed URL names, as an attachment. 403 for a bad or
    expired signature, 404 when the file is gone."""

    async def download_file(request: Request) -> Response:
        try:
            stored, src = await asyncio.to_thread(
                open_download, settings, request.path_params["token"]
            )
        except DomainError as exc:
            status = 404 if isinstance(exc, NotFound) else 403
            return JSONResponse({"errors": [{"message": exc.message}]}, status_code=status)
        name = stored.path.rsplit("/", 1)[-1]
        headers = {
            "content-length": str(stored.size),
            "content-disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
            "x-content-type-options": "nosniff",
            "content-security-policy": "default-src 'none'; sandbox",
            "cache-control": "private, no-store",
        }
        return StreamingResponse(_chunks(src), media_type=stored.content_type, headers=headers)

    return download_file
