"""The service's render engine: render processes (``gagavatar.serve.workers``) compute what the
animator computes, keep and drop avatars as the caller says, and fail one call at a time; the
render queue serves the session that got the fewest frames first."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch

from gagavatar.data import Dataset
from gagavatar.data.frame import FrameParams
from gagavatar.io import tensor_to_image
from gagavatar.model.network import Avatar
from gagavatar.reenact import DEMO_DATA, bundled
from gagavatar.serve import workers
from gagavatar.serve.engine import RenderEngine
from gagavatar.serve.workers import RenderProcess

pytestmark = pytest.mark.usefixtures("one_thread")  # as the server: one torch thread


@pytest.fixture(scope="module")
def clips():
    videos = {v.id: v for v in Dataset(bundled(DEMO_DATA)).videos}
    return videos["source"], videos["driver"]


@pytest.fixture(scope="module")
def avatars(animator, clips):
    """Two different avatars of batch 1 (the source and its mirror image)."""
    source, _ = clips
    mirrored = animator.model.reconstruct(torch.flip(animator.source_image(source, 0), [3]), source.frames(0).camera)
    return [animator.reconstruct(source), mirrored]


@pytest.fixture(scope="module")
def process(animator):
    p = RenderProcess(animator)
    yield p
    p.close()


def expected(animator, avatars: list, frames: FrameParams) -> list[np.ndarray]:
    with torch.inference_mode():
        return [tensor_to_image(x) for x in animator.images(Avatar.cat(avatars), frames)]


def test_a_render_process_computes_what_the_animator_computes(animator, avatars, clips, process):
    _, driver = clips
    for picks, frame_ids in (([0], [3]), ([0, 1, 0], [5, 9, 30]), ([1], [12])):
        batch, frames = [avatars[i] for i in picks], FrameParams.cat([driver.frames(i) for i in frame_ids])
        images, spent = process.images(batch, frames, None)
        for got, want in zip(images, expected(animator, batch, frames), strict=True):
            assert np.array_equal(got, want)  # the same model, the same operations: the same bytes
        assert spent["model"] > 0 and spent["to_image"] >= 0
    with torch.inference_mode():  # vertices the caller brings are used (a speaker's)
        frame = driver.frames(7)
        vertices = frame.vertices(animator.head) + torch.tensor([0.0, 0.0, 0.01])
        want = [tensor_to_image(x) for x in animator.images(avatars[0], frame, vertices=vertices)]
    assert np.array_equal(process.images([avatars[0]], frame, vertices)[0][0], want[0])


def test_a_render_process_keeps_the_avatars_the_caller_says(animator, avatars, clips, monkeypatch):
    """The caller decides which avatars the process keeps (the most recent ``KEPT_AVATARS``) and
    sends one again when it was dropped; an avatar is sent once while it is kept."""
    _, driver = clips
    monkeypatch.setattr(workers, "KEPT_AVATARS", 1)
    p = RenderProcess(animator)
    try:
        frame = driver.frames(4)
        for i in (0, 1, 0, 0):
            assert np.array_equal(p.images([avatars[i]], frame, None)[0][0], expected(animator, [avatars[i]], frame)[0])
            assert len(p._sent) == 1
        sent = []
        monkeypatch.setattr(workers, "_send", lambda conn, obj, send=workers._send: (sent.append(obj), send(conn, obj)))
        p.images([avatars[0]], frame, None)
        assert sent[-1][0] == {}  # kept there: not sent again
        p.images([avatars[1]], frame, None)
        assert list(sent[-1][0].values()) == [avatars[1]] and len(sent[-1][1]) == 1  # sent; the other dropped
    finally:
        p.close()


def test_a_failed_call_raises_in_the_caller_and_the_process_goes_on(avatars, clips, process):
    _, driver = clips
    with pytest.raises(ValueError, match="5 vertices"):
        process.images([avatars[0]], driver.frames(0), torch.zeros(1, 5, 3))
    assert len(process.images([avatars[0]], driver.frames(0), None)[0]) == 1


def test_a_render_process_that_died_says_so(animator, avatars, clips):
    _, driver = clips
    p = RenderProcess(animator)
    p.connect()
    p.process.kill()
    p.process.wait()
    with pytest.raises(RuntimeError, match="the render process stopped"):
        p.images([avatars[0]], driver.frames(0), None)
    p.close()


def test_the_session_with_the_fewest_frames_is_rendered_first(animator, avatars, clips):
    """One render thread, one frame at a time: the waiting frames come out by priority (a
    session's frame rate so far), not in the order they came."""
    _, driver = clips
    engine = RenderEngine(animator, max_batch=1)
    done = []

    async def render_all():
        tasks = []
        for name, priority in (("fast", 9.0), ("slow", 1.0), ("middle", 4.0), ("new", 0.0)):
            task = asyncio.create_task(engine.render(avatars[0], None, driver.frames(0), "raw", 0, priority=priority))
            task.add_done_callback(lambda _, name=name: done.append(name))
            tasks.append(task)
        await asyncio.sleep(0)  # all four wait before the render thread starts
        engine.start()
        await asyncio.gather(*tasks)

    try:
        asyncio.run(render_all())
    finally:
        engine.stop()
    assert done == ["new", "slow", "middle", "fast"]


def test_a_session_over_its_rate_waits_for_the_others(animator, clips):
    from gagavatar.serve.cache import AvatarEntry
    from gagavatar.serve.config import ServeConfig
    from gagavatar.serve.session import COUNTERS, Session

    source, _ = clips
    entry = AvatarEntry("x", None, source.frames(0), 0)
    good, flooding = (Session(entry, {}, ServeConfig(), dict.fromkeys(COUNTERS, 0)) for _ in range(2))
    good.sent = 100  # far more frames than the other
    flooding.rate.over = 1  # a window over its rate (warned)
    assert flooding.priority() > good.priority() > Session(entry, {}, ServeConfig(), {}).priority()
    flooding.rate.over = 0
    time.sleep(0.01)
    assert flooding.priority() < good.priority()
