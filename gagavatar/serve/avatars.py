"""``POST /avatars``: the body read within its limit, then the avatar found by its id (memory,
then disk) or made: the upload checked and tracked on a worker thread (``uploads``), the
avatar reconstructed on a render thread, kept in memory and on disk (``cache``).

Refusals are ``UploadError`` s (a 4xx and a message), chosen by the error's type
(``gagavatar.errors``): no face 422, over a limit 413, a path leading out 400, anything
else the upload makes go wrong 422.
"""
from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

from starlette.requests import Request

from gagavatar.errors import InputError, LimitError, NoFaceError, PathEscapeError
from gagavatar.reenact import load_tracked, source_frame
from gagavatar.serve import uploads
from gagavatar.serve.cache import AvatarEntry, avatar_bytes, avatar_id
from gagavatar.serve.config import ServeConfig
from gagavatar.serve.uploads import UploadError

log = logging.getLogger("gagavatar.serve")

MULTIPART_SLACK = 64 * 1024  # the multipart framing around the file


async def read_upload(request: Request, config: ServeConfig) -> bytes:
    """The photo or archive of a POST: the multipart field ``photo``, or the whole body; at most
    ``--max-upload-mb`` (counted as it arrives)."""
    limit = int(config.max_upload_mb * 2**20)
    too_big = UploadError(413, f"the upload is larger than {config.max_upload_mb:g} MB (--max-upload-mb)")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit + MULTIPART_SLACK):
        raise too_big
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit + MULTIPART_SLACK:
            raise too_big
        chunks.append(chunk)
    body = b"".join(chunks)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        if not body:
            raise UploadError(400, "no photo: send it as the multipart field 'photo' (curl -F photo=@face.jpg) or "
                                   "as the request body")
        return body

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except Exception as e:  # python-multipart's parse errors have no common base
        raise UploadError(400, f"a multipart body that cannot be read ({e})") from e
    try:
        photo = form.get("photo")
        if photo is None or isinstance(photo, str):
            raise UploadError(400, "no file in the multipart field 'photo' (curl -F photo=@face.jpg)")
        data = await photo.read()
    finally:
        await form.close()
    if len(data) > limit:
        raise too_big
    return data


def without(text: str, folder: Path) -> str:
    """A message without the server's own paths."""
    for f in sorted({str(folder), str(folder.resolve())}, key=len, reverse=True):
        text = text.replace(f.rstrip("/") + "/", "").replace(f, "")
    return text


class AvatarMaker:
    """Finds or makes the avatar of an upload (one made at a time: tracking and reconstruction
    compete with rendering; a few wait, more are refused with 503)."""

    def __init__(self, service):
        self.service = service
        self.lock = asyncio.Lock()
        self.waiting = 0

    async def find(self, avatar_id: str) -> AvatarEntry | None:
        """The avatar ``avatar_id`` from memory, else from the disk cache (then kept in memory)."""
        s = self.service
        entry = s.cache.get(avatar_id)
        if entry is None and s.disk is not None and s.disk.has(avatar_id):
            loop = asyncio.get_running_loop()
            entry = await loop.run_in_executor(s.pool, s.disk.load, avatar_id, s.animator.device)
            if entry is not None:
                s.cache.put(entry, created=False)
        return entry

    async def get_or_make(self, data: bytes) -> tuple[AvatarEntry, bool]:
        """(the upload's avatar, whether it was made now)."""
        s = self.service
        kind = uploads.sniff(data, s.config.max_image_pixels)
        key = avatar_id(data, s.model_key)
        entry = await self.find(key)
        if entry is not None:
            return entry, False
        if self.waiting >= 2 * s.config.track_workers + 2:
            raise UploadError(503, "the server is busy making other avatars: try again in a few seconds")
        self.waiting += 1
        try:
            async with self.lock:
                entry = await self.find(key)  # the same upload, made while this one waited
                if entry is not None:
                    return entry, False
                entry = await self._make(key, data, kind)
        finally:
            self.waiting -= 1
        s.cache.put(entry)
        if s.disk is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(s.pool, s.disk.save, entry)
            except OSError as e:  # a full or read-only disk: the avatar is served, not kept
                log.warning("avatar cache: %s not written (%s)", entry.id, e)
        return entry, True

    async def _make(self, key: str, data: bytes, kind: str) -> AvatarEntry:
        s = self.service
        folder = Path(tempfile.mkdtemp(prefix="upload-", dir=s.workdir))
        loop = asyncio.get_running_loop()
        try:
            video, frame = await loop.run_in_executor(s.pool, self._prepare, data, kind, folder)
            try:
                avatar = await s.engine.call(lambda: s.animator.reconstruct(video, frame))
            except (InputError, ValueError, OSError) as e:
                raise UploadError(422, without(str(e), folder)) from e
            return AvatarEntry(key, avatar, video.frames(frame), avatar_bytes(avatar))
        finally:
            uploads.remove(folder)

    def _prepare(self, data: bytes, kind: str, folder: Path):
        """(tracked video, source frame) of an upload, on a worker thread."""
        c, s = self.service.config, self.service
        try:
            if kind == "zip":
                max_bytes = int(c.max_unpacked_mb * 2**20)
                root = uploads.extract_archive(data, folder / "archive", max_bytes, c.max_archive_files)
                video = uploads.open_tracked(root, c.max_image_pixels, max_bytes)
                video.check_head(s.animator.head)  # as load_tracked does for a photo
            else:
                photo = uploads.save_photo(data, folder / "photo", c.max_image_pixels)
                video = load_tracked(photo, folder / "tracked", s.animator.head, progress=False)
            frame = source_frame(video)
            if kind == "zip":
                uploads.check_frame(video, frame)
            return video, frame
        except UploadError:
            raise
        except NoFaceError as e:
            if kind != "zip":
                raise UploadError(422, "no face found in the photo: send a photo that shows a face, large and "
                                       "from the front") from e
            raise UploadError(422, f"no face found: {without(str(e), folder)}") from e
        except LimitError as e:
            raise UploadError(413, without(str(e), folder)) from e
        except PathEscapeError as e:
            raise UploadError(400, without(str(e), folder)) from e
        except RecursionError as e:  # a file nested too deeply for a parser (JSON is checked before)
            raise UploadError(400, "the upload holds a file nested too deeply to read") from e
        except (ValueError, OSError, KeyError, IndexError) as e:  # dataset, image and tracking errors
            raise UploadError(422, f"the upload cannot be used: {without(str(e), folder)}") from e
