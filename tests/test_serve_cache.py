# ruff: noqa: F811 - the fixtures of test_serve, imported by name
"""Avatar ids from content, and ``--cache-dir``: the same upload is the same avatar (not tracked or
reconstructed again), it survives a restart of the server, and the folder stays within
``--cache-mb``. In-process apps (starlette's TestClient); "a restart" is a second app on the
same folder."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from starlette.testclient import TestClient
from test_serve import LOOPBACK, WS, clips, frame_of, source_zip  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for the module

from gagavatar.serve.cache import avatar_id, is_avatar_id, model_identity
from gagavatar.serve.protocol import decode_image, params_message
from gagavatar.serve.server import ServeConfig, create_app


def drive_one(client, avatar: str, driver) -> np.ndarray:
    with client.websocket_connect(f"{WS}/avatars/{avatar}/drive?format=png") as ws:
        json.loads(ws.receive_text())
        ws.send_text(json.dumps(params_message(driver.params, 7, driver.width, driver.height)))
        header, data = frame_of(ws.receive_bytes())
    return decode_image(data, "png")


def test_ids_come_from_the_content_and_the_model(animator, source_zip):
    key = model_identity(animator)
    assert key == model_identity(animator)  # stable
    first = avatar_id(source_zip, key)
    assert is_avatar_id(first) and first == avatar_id(source_zip, key)
    assert avatar_id(source_zip + b"\0", key) != first  # other bytes
    assert avatar_id(source_zip, key[::-1]) != first  # another model
    assert not is_avatar_id("../../etc/passwd") and not is_avatar_id("a" * 21)


def test_avatars_survive_a_restart_in_the_cache_dir(animator, source_zip, clips, tmp_path):
    _, driver = clips
    config = ServeConfig(cache_dir=str(tmp_path / "avatars"))
    with TestClient(create_app(config, animator), base_url=LOOPBACK) as client:
        made = client.post("/avatars", files={"photo": ("source.zip", source_zip)})
        assert made.status_code == 201 and not made.json()["existing"]
        avatar = made.json()["id"]
        again = client.post("/avatars", content=source_zip, headers={"content-type": "application/zip"})
        assert again.status_code == 200 and again.json() == {**again.json(), "id": avatar, "existing": True}
        before = drive_one(client, avatar, driver)
        metrics = client.get("/metrics").json()
        assert metrics["uploads"] == {"created": 1, "found": 1, "refused": 0}
        assert metrics["avatars"]["disk"]["files"] == 1
    assert [p.name for p in (tmp_path / "avatars").iterdir()] == [f"{avatar}.safetensors"]

    with TestClient(create_app(config, animator), base_url=LOOPBACK) as client:  # the server restarted
        assert np.array_equal(drive_one(client, avatar, driver), before)  # driven without an upload
        found = client.post("/avatars", files={"photo": ("same.zip", source_zip)})
        assert found.status_code == 200 and found.json()["id"] == avatar
        metrics = client.get("/metrics").json()
        assert metrics["uploads"]["created"] == 0 and metrics["avatars"]["disk"]["loaded"] == 1
        assert client.delete(f"/avatars/{avatar}").status_code == 200  # from memory and from disk
    assert not list((tmp_path / "avatars").glob("*.safetensors"))
    with TestClient(create_app(config, animator), base_url=LOOPBACK) as client:
        assert client.delete(f"/avatars/{avatar}").status_code == 404


def with_note(archive: bytes, note: str) -> bytes:
    """The same tracked folder, zipped with one more file: other bytes, so another avatar id."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(buffer, "w") as out:
        for member in src.infolist():
            out.writestr(member, src.read(member))
        out.writestr("note.txt", note)
    return buffer.getvalue()


def test_the_cache_dir_stays_within_its_size(animator, source_zip, clips, tmp_path):
    _, driver = clips
    one = (tmp_path / "one")
    with TestClient(create_app(ServeConfig(cache_dir=str(one)), animator), base_url=LOOPBACK) as client:
        client.post("/avatars", files={"photo": ("s.zip", source_zip)})
    size = next(one.glob("*.safetensors")).stat().st_size
    config = ServeConfig(cache_dir=str(tmp_path / "avatars"), cache_mb=2.5 * size / 2**20)  # room for two
    with TestClient(create_app(config, animator), base_url=LOOPBACK) as client:
        ids = []
        for k in range(3):
            response = client.post("/avatars", files={"photo": (f"{k}.zip", with_note(source_zip, str(k)))})
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        files = {p.stem for p in (tmp_path / "avatars").glob("*.safetensors")}
        assert files == set(ids[1:]), files  # over the limit: the least recently used went first
        for avatar in ids:  # all still in memory
            assert drive_one(client, avatar, driver).std() > 5


def test_a_damaged_cache_file_is_made_again(animator, source_zip, tmp_path):
    config = ServeConfig(cache_dir=str(tmp_path / "avatars"))
    with TestClient(create_app(config, animator), base_url=LOOPBACK) as client:
        avatar = client.post("/avatars", files={"photo": ("s.zip", source_zip)}).json()["id"]
    path = tmp_path / "avatars" / f"{avatar}.safetensors"
    path.write_bytes(path.read_bytes()[:1000])  # cut short
    with TestClient(create_app(config, animator), base_url=LOOPBACK) as client:
        response = client.post("/avatars", files={"photo": ("s.zip", source_zip)})
        assert response.status_code == 201 and response.json()["id"] == avatar  # made again, same id
        assert client.get("/metrics").json()["errors"]["server"] == 0
    assert path.stat().st_size > 1000
