"""The WebSocket protocol against real processes: storage and the web service on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from harness import Stack, make_stack
from tapedeck.ingest.uploader import UploadRejected, upload_track


def new_session(api: httpx.Client) -> tuple[str, str]:
    body = api.post("/api/sessions").json()
    return body["id"], body["uploadToken"]


async def expect_close(ws: ClientConnection) -> tuple[int, dict[str, Any] | None]:
    error = None
    try:
        while True:
            message = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(message, str) and json.loads(message).get("type") == "error":
                error = json.loads(message)
    except ConnectionClosed:
        pass
    return ws.close_code or 0, error


def start(mime: str = "video/webm;codecs=h264") -> str:
    return json.dumps({"type": "start", "mimeType": mime, "startedAt": 1700000000000.5})


async def test_stream_and_finish(stack: Stack, api: httpx.Client) -> None:
    sid, token = new_session(api)
    data = os.urandom(2_500_000)
    result = await upload_track(
        stack.ws_base, "video", data, session_id=sid, token=token, frame_bytes=256 * 1024
    )
    assert result.committed == len(data) and result.connections == 1
    assert result.acks == sorted(result.acks)
    assert (stack.data_dir / sid / "video.webm").read_bytes() == data
    detail = api.get(f"/api/sessions/{sid}").json()
    assert detail["tracks"][0]["bytes"] == len(data) and detail["tracks"][0]["finished"]
    assert detail["state"] == "recorded"


async def test_session_created_by_socket(stack: Stack) -> None:
    result = await upload_track(stack.ws_base, "audio", b"opus" * 1000, mime_type="audio/webm")
    assert result.session_id and result.upload_token
    assert (stack.data_dir / result.session_id / "audio.webm").read_bytes() == b"opus" * 1000


async def test_resume_after_cut(stack: Stack, api: httpx.Client) -> None:
    """Cut the socket mid-stream; the client reconnects and resends from `committed`."""
    sid, token = new_session(api)
    data = os.urandom(3_000_000)
    cuts = {500_000, 1_600_000, 2_400_000}

    async def cut(ws: ClientConnection, offset: int) -> None:
        if any(offset - 100_000 < c <= offset for c in cuts):
            cuts.difference_update({c for c in cuts if c <= offset})
            ws.transport.abort()  # a dropped network, not a polite close
            await asyncio.sleep(0)

    result = await upload_track(
        stack.ws_base,
        "video",
        data,
        session_id=sid,
        token=token,
        frame_bytes=100_000,
        after_frame=cut,
    )
    assert result.connections == 4
    assert (stack.data_dir / sid / "video.webm").read_bytes() == data


async def test_newer_connection_takes_over(stack: Stack, api: httpx.Client) -> None:
    sid, token = new_session(api)
    url = f"{stack.ws_base}/ws/video?session={sid}&token={token}"
    async with connect(url, compression=None) as old:
        await old.send(start())
        assert json.loads(await old.recv())["type"] == "ready"
        await old.send(b"a" * 1000)
        assert json.loads(await old.recv()) == {"type": "ack", "committed": 1000}
        async with connect(url, compression=None) as new:
            await new.send(start())
            ready = json.loads(await new.recv())
            assert ready["committed"] == 1000
            code, error = await expect_close(old)
            assert code == 4409 and error and error["code"] == "superseded"
            await new.send(b"b" * 500)
            await new.send(json.dumps({"type": "finish"}))
            messages = [json.loads(await new.recv()) for _ in range(2)]
            assert messages[-1] == {"type": "finished", "committed": 1500}
    assert (stack.data_dir / sid / "video.webm").read_bytes() == b"a" * 1000 + b"b" * 500


async def test_finished_track_refuses_writers(stack: Stack, api: httpx.Client) -> None:
    sid, token = new_session(api)
    await upload_track(stack.ws_base, "video", b"x" * 10, session_id=sid, token=token)
    with pytest.raises(UploadRejected) as err:
        await upload_track(stack.ws_base, "video", b"x" * 20, session_id=sid, token=token)
    assert err.value.code == 4409


async def test_an_upload_after_the_session_finished_is_one_clear_refusal(
    stack: Stack, api: httpx.Client
) -> None:
    """upload_track once the track, then the whole session, is finished: UploadRejected with
    4409 `finished` and storage's reason after one connection (4409 is not retried: a retry
    loop would end in a 1006 "gave up"), never a hang or another exception."""
    sid, token = new_session(api)
    await upload_track(stack.ws_base, "video", b"x" * 10, session_id=sid, token=token)

    async def refused(track: str, mime_type: str) -> UploadRejected:
        with pytest.raises(UploadRejected) as err:
            await asyncio.wait_for(
                upload_track(
                    stack.ws_base,
                    track,
                    b"y" * 20,
                    session_id=sid,
                    token=token,
                    mime_type=mime_type,
                ),
                60,
            )
        return err.value

    again = await refused("video", "video/webm")  # a resend whose `finished` was lost
    assert again.code == 4409 and again.error is not None, again
    assert again.error["code"] == "finished"
    assert str(again) == f"closed 4409: video track of {sid} is finished"
    compiling = api.post(f"/api/compile-video/{sid}")
    assert compiling.status_code == 202, compiling.text
    late = await refused("audio", "audio/webm")  # a track the session never had
    assert late.code == 4409 and late.error is not None, late
    assert late.error["code"] == "finished"
    assert str(late).startswith(f"closed 4409: session {sid} is "), str(late)
    assert str(late).endswith(", not recording"), str(late)
    assert (stack.data_dir / sid / "video.webm").read_bytes() == b"x" * 10
    assert not (stack.data_dir / sid / "audio.webm").exists()


async def test_permessage_deflate_is_declined(stack: Stack, api: httpx.Client) -> None:
    sid, token = new_session(api)
    async with connect(f"{stack.ws_base}/ws/video?session={sid}&token={token}") as ws:
        assert "permessage-deflate" not in (
            ws.response.headers.get("Sec-WebSocket-Extensions") or ""
        )


BAD_OPENINGS = [
    # (path and query, first message, close code, error code)
    ("/ws/video?session={sid}&token={token}", "{not json", 4400, "malformed-json"),
    ("/ws/video?session={sid}&token={token}", b"\x1a\x45\xdf\xa3", 4400, "binary-before-start"),
    ("/ws/video?session={sid}&token={token}", '{"type":"finish"}', 4400, "unexpected-finish"),
    ("/ws/video?session={sid}&token={token}", '{"type":"start"}', 4400, "bad-message"),
    ("/ws/hologram?session={sid}&token={token}", None, 4404, "unknown-track"),
    ("/ws/video?session=..&token={token}", None, 4400, "invalid-session-id"),
    ("/ws/video?session=..%2F..%2Fetc&token={token}", None, 4400, "invalid-session-id"),
    ("/ws/video?session=%2Fetc%2Fpasswd&token={token}", None, 4400, "invalid-session-id"),
    ("/ws/video?session=" + "a" * 64 + "&token={token}", None, 4400, "invalid-session-id"),
    ("/ws/video?session={sid}&token=0.AAAA", None, 4401, "bad-token"),
    ("/ws/video?session={sid}", None, 4401, "bad-token"),
    ("/ws/video?session={other}&token={token}", None, 4401, "bad-token"),
    # a token steered to another storage replica (its replica is signed)
    ("/ws/video?session={sid}&token=1~{token}", None, 4401, "bad-token"),
    ("/ws/video?session={sid}&token=x~{token}", None, 4401, "bad-token"),
]


@pytest.mark.parametrize(("path", "first", "close", "code"), BAD_OPENINGS)
async def test_bad_openings(
    stack: Stack, api: httpx.Client, path: str, first: str | bytes | None, close: int, code: str
) -> None:
    sid, token = new_session(api)
    other, _ = new_session(api)
    async with connect(stack.ws_base + path.format(sid=sid, token=token, other=other)) as ws:
        if first is not None:
            await ws.send(first)
        got_close, error = await expect_close(ws)
    assert got_close == close
    assert error is not None and error["code"] == code and error["message"]
    assert api.get("/healthz").status_code == 200


async def test_unknown_session_with_valid_token(stack: Stack, api: httpx.Client) -> None:
    sid, token = new_session(api)
    assert api.delete(f"/api/sessions/{sid}").status_code == 204
    async with connect(f"{stack.ws_base}/ws/video?session={sid}&token={token}") as ws:
        code, error = await expect_close(ws)
    assert code == 4404 and error and error["code"] == "unknown-session"


async def test_oversized_frame_keeps_acknowledged_bytes(stack: Stack, api: httpx.Client) -> None:
    sid, token = new_session(api)
    async with connect(
        f"{stack.ws_base}/ws/video?session={sid}&token={token}", compression=None, max_size=None
    ) as ws:
        await ws.send(start())
        await ws.recv()
        await ws.send(b"k" * 4096)
        assert json.loads(await ws.recv())["committed"] == 4096
        await ws.send(b"z" * (8 * 1024 * 1024 + 1))
        code, error = await expect_close(ws)
    assert code == 4413 and error and error["code"] == "frame-too-large"
    assert (stack.data_dir / sid / "video.webm").read_bytes() == b"k" * 4096
    assert api.get("/readyz").status_code == 200


async def test_storage_refusal_reaches_a_client_that_keeps_sending(tmp_path: Path) -> None:
    """Storage ends the write stream while frames are still on their way to it: gRPC reports
    those sends only as a bare INTERNAL, and the client must hear storage's own reason."""
    limited = make_stack(tmp_path, max_session_bytes=str(1_000_000)).start()
    try:
        with httpx.Client(base_url=limited.base_url) as api:
            sessions = [new_session(api) for _ in range(5)]
        for sid, token in sessions:
            async with connect(
                f"{limited.ws_base}/ws/video?session={sid}&token={token}", compression=None
            ) as ws:
                await ws.send(start())
                await ws.recv()
                with contextlib.suppress(ConnectionClosed):
                    for _ in range(40):
                        await ws.send(os.urandom(64 * 1024))
                code, error = await expect_close(ws)
            assert code == 4413 and error and error["code"] == "session-too-large", error
    finally:
        limited.stop()


def session_ids(api: httpx.Client) -> set[str]:
    return {item["id"] for item in api.get("/api/sessions", params={"limit": 1000}).json()["items"]}


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ("{not json", "malformed-json"),
        (b"\x1a\x45\xdf\xa3", "binary-before-start"),
        ('{"type":"finish"}', "unexpected-finish"),
        ('{"type":"start","mimeType":"video/webm"}', "bad-message"),
        (None, None),  # nothing at all; the client gives up
    ],
)
async def test_no_session_until_a_track_starts(
    stack: Stack, api: httpx.Client, first: str | bytes | None, code: str | None
) -> None:
    """A socket without `?session=` creates its session only once a valid `start` came."""
    before = session_ids(api)
    async with connect(f"{stack.ws_base}/ws/video") as ws:
        if first is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.recv(), 1)  # the server has nothing to say yet
        else:
            await ws.send(first)
            got_close, error = await expect_close(ws)
            assert got_close == 4400 and error and error["code"] == code
    assert session_ids(api) == before
    assert not {p.name for p in stack.data_dir.iterdir() if p.is_dir()} - before


async def test_a_stale_connection_never_takes_over_a_newer_one(
    stack: Stack, api: httpx.Client
) -> None:
    """A connection whose `start` arrives late (a socket the client already gave up on, its
    start buffered in a proxy or a slow network) must not close the client's live, newer
    connection: "newer" is the order connections were accepted in. Found by the nemesis."""
    sid, token = new_session(api)
    url = f"{stack.ws_base}/ws/video?session={sid}&token={token}"
    data = os.urandom(300_000)
    async with connect(url, compression=None) as stale:
        await asyncio.sleep(0.2)  # accepted first; its start comes later
        async with connect(url, compression=None) as live:
            await live.send(start())
            ready = json.loads(await live.recv())
            assert ready["type"] == "ready"
            await live.send(data[:100_000])
            assert json.loads(await live.recv()) == {"type": "ack", "committed": 100_000}
            await stale.send(start())
            code, error = await expect_close(stale)
            assert code == 4409 and error is not None and error["code"] == "superseded"
            await live.send(data[100_000:])
            await live.send(json.dumps({"type": "finish"}))
            while (message := json.loads(await live.recv()))["type"] == "ack":
                pass
            assert message == {"type": "finished", "committed": len(data)}
    assert (stack.data_dir / sid / "video.webm").read_bytes() == data


async def test_streams_share_a_tiny_receive_pool_and_dropped_ones_give_their_bytes_back(
    tmp_path: Path,
) -> None:
    """With a receive pool of one byte every frame fills it: streams take turns, and a
    connection cut with frames unacknowledged must return them, or every stream stalls."""
    tiny = make_stack(tmp_path, receive_pool_bytes="1").start()
    try:
        with httpx.Client(base_url=tiny.base_url) as api:
            sessions = [new_session(api) for _ in range(4)]
        payloads = [os.urandom(1_000_000) for _ in sessions]
        cut_done = False

        async def cut(ws: ClientConnection, offset: int) -> None:
            nonlocal cut_done
            if not cut_done and offset >= 400_000:
                cut_done = True
                ws.transport.abort()
                await asyncio.sleep(0)

        results = await asyncio.wait_for(
            asyncio.gather(
                *(
                    upload_track(
                        tiny.ws_base,
                        "video",
                        data,
                        session_id=sid,
                        token=token,
                        frame_bytes=100_000,
                        after_frame=cut if i == 0 else None,
                    )
                    for i, ((sid, token), data) in enumerate(zip(sessions, payloads, strict=True))
                )
            ),
            120,
        )
        assert cut_done and results[0].connections >= 2
        for (sid, _), data, result in zip(sessions, payloads, results, strict=True):
            assert result.committed == len(data)
            assert (tiny.data_dir / sid / "video.webm").read_bytes() == data
    finally:
        tiny.stop()
