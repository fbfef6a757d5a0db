"""Bad input on every Kyutai endpoint: the protocol's own error (msgpack Error / kind 5), then
the socket closes (1008; 1013 when every slot is busy) and the server keeps serving. A wrong
or missing API key is refused before the upgrade (HTTP 401)."""

from __future__ import annotations

import contextlib
import json
import urllib.request

import msgpack
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from services.wiring import close_all
from tests.kyutai.conftest import TOKEN, pack, serve, unpack

ASR, TTS, CHAT = "/api/asr-streaming", "/api/tts_streaming", "/api/chat"


def error_then_close(url: str, send: list, kind: str = "msgpack") -> tuple[str, int]:
    """Sends ``send``; the error message the server answers with and the close code."""
    with connect(url) as ws:
        for message in send:
            ws.send(message)
        messages = []
        with pytest.raises(ConnectionClosed):
            while True:
                messages.append(ws.recv(timeout=30))
        code = ws.close_code
    last = messages[-1]
    if kind == "msgpack":
        error = unpack(last)
        assert error["type"] == "Error", error
        return error["message"], code
    assert last[0] == 5, last
    return last[1:].decode(), code


@pytest.mark.parametrize("path,send,says", [
    (ASR, [b"\x93\x01"], "not a msgpack message"),
    (ASR, [msgpack.packb([1, 2])], "expected a msgpack map"),
    (ASR, [pack("Audio", pcm="loud")], "'pcm' field of type list"),
    (ASR, [pack("Audio", pcm=["a", "b"])], "Audio.pcm must be a list of numbers"),
    (ASR, [pack("Audio", pcm=[[0.0, 1.0]])], "flat list of samples"),
    (ASR, [pack("Audio", pcm=[float("nan")])], "NaN"),
    (ASR, [pack("Marker", id="seven")], "'id' field of type int"),
    (ASR, [pack("Sing")], "unknown message type 'Sing'"),
    (ASR, [pack("OggOpus", data=b"this is not an ogg page, not at all")] * 2, "not Ogg-Opus"),
    (TTS + "?format=PcmMessagePack", [pack("Voice", embeddings=[0.0], shape=[1])],
     "Voice embeddings are not supported"),
    (TTS + "?format=PcmMessagePack", [pack("Text", text=3)], "'text' field of type str"),
    (TTS + "?format=PcmMessagePack&temperature=hot", [], "temperature must be a number"),
    (TTS + "?format=PcmMessagePack&top_k=-4", [], "top_k must be in"),
    (TTS + "?format=Wav", [], "format must be one of"),
    (TTS + "?format=PcmMessagePack&seed=-1", [], "seed must be in"),
])
def test_bad_msgpack_input_is_an_error_then_close(served, path, send, says):
    message, code = error_then_close(f"ws://127.0.0.1:{served.http_port}{path}", send)
    assert says in message
    assert code == 1008
    # The server goes on serving.
    with connect(served.url(ASR)) as ws:
        assert unpack(ws.recv(timeout=10)) == {"type": "Ready"}


@pytest.mark.parametrize("query,send,says", [
    ("?format=pcm", [b"\x02hello"], "unexpected message kind 2"),
    ("?format=pcm", [b"\x01abc"], "multiple of 4 bytes"),
    ("", [b"\x01this is not an ogg page, not at all"] * 2, "not Ogg-Opus"),
    ("?format=mp3", [], "format must be opus"),
    ("?format=pcm&text_temperature=99", [], "must be in [0, 10], got 99"),
    ("?format=pcm", ["text frame"], "chat messages are binary"),
])
def test_bad_chat_input_is_a_kind_5_error_then_close(served, query, send, says):
    message, code = error_then_close(served.url(CHAT) + query, send, kind="chat")
    assert says in message
    assert code == 1008
    with connect(served.url(CHAT, format="pcm")) as ws:
        assert ws.recv(timeout=10) == b"\x00"


def test_a_full_server_says_when_to_retry(served):
    """Every slot taken: Error / kind 5 naming the slots and the delay, close 1013."""
    with contextlib.ExitStack() as held:
        for _ in range(4):  # conftest's max_sessions
            ws = held.enter_context(connect(served.url(CHAT, format="pcm")))
            assert ws.recv(timeout=10) == b"\x00"
        for path, kind in ((ASR, "msgpack"), (TTS + "?format=PcmMessagePack", "msgpack"),
                           (CHAT, "chat")):
            message, code = error_then_close(f"ws://127.0.0.1:{served.http_port}{path}", [],
                                             kind)
            assert message == "all 4 slots are busy, retry in 1 s"
            assert code == 1013
    with connect(served.url(ASR)) as ws:  # the slots are free again
        assert unpack(ws.recv(timeout=10)) == {"type": "Ready"}


@pytest.fixture(scope="module")
def with_token():
    running, server = serve(token=TOKEN)
    yield running
    running.channel.close()
    server.stop(None).wait()
    close_all(running.services)


@pytest.mark.parametrize("path", [ASR, TTS, CHAT])
def test_wrong_or_missing_key_is_refused_before_the_upgrade(with_token, path):
    for headers, query in (({}, ""), ({"kyutai-api-key": "wrong"}, ""), ({}, "?auth_id=no")):
        with pytest.raises(InvalidStatus) as refused:
            connect(with_token.url(path) + query, additional_headers=headers)
        assert refused.value.response.status_code == 401


def test_the_key_in_the_header_or_the_query(with_token):
    with connect(with_token.url(ASR), additional_headers={"kyutai-api-key": TOKEN}) as ws:
        assert unpack(ws.recv(timeout=10)) == {"type": "Ready"}
    with connect(with_token.url(CHAT, format="pcm", auth_id=TOKEN)) as ws:
        assert ws.recv(timeout=10) == b"\x00"
        ws.send(b"\x01" + np.zeros(1920, np.float32).tobytes())


def test_voices_and_info(served):
    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{served.http_port}{path}") as reply:
            return json.loads(reply.read())

    assert get("/api/voices") == {"voices": [], "default": None}  # the Moshi LM takes none
    info = get("/api/info")
    assert info["services"] == ["asr", "tts", "chat"]
    assert info["max_sessions"] == 4
    assert set(info["models"]) == {"asr", "tts", "chat"}
    assert info["pause_heads"] is False
