"""Kyutai's own ``python -m moshi.client`` (from the ``moshi`` package, in its own venv, run
headless: see tests/kyutai/moshi_client.py) holds a dialogue on our /api/chat: the text it
prints is what our gRPC Converse answers to the audio it sent (Ogg-Opus, as the server
decodes it), for the server's default seed and sampling."""

from __future__ import annotations

import time

import numpy as np
import pytest
import sphn

from tests.kyutai import moshi_client
from tests.kyutai.test_chat import FRAME

RNG = np.random.default_rng(8)
CLIP = (0.1 * RNG.standard_normal(FRAME * 100)).astype(np.float32)  # 8 s


def heard_by_the_server(pcm: np.ndarray) -> np.ndarray:
    """The client encodes 80 ms blocks with sphn, the server decodes them with sphn."""
    writer, reader = sphn.OpusStreamWriter(24000), sphn.OpusStreamReader(24000)
    return np.concatenate([reader.append_bytes(writer.append_pcm(f))
                           for f in pcm.reshape(-1, FRAME)])


@pytest.mark.slow  # the client imports torch before it connects (about 10 s)
def test_moshi_client_talks_with_our_chat(served, tmp_path):
    try:
        client = moshi_client.Client(tmp_path, served.http_port, CLIP)
    except moshi_client.ClientUnavailable as error:
        pytest.fail(str(error))
    deadline = time.monotonic() + 60
    try:
        while len(client.printed) < 12 and time.monotonic() < deadline \
                and client.process.poll() is None:
            time.sleep(0.1)
    finally:
        log = client.stop()
    text = client.printed.decode(errors="replace")
    assert len(client.printed) >= 12, f"moshi.client printed {text!r}; its log ends:\n{log}"
    # The server's defaults: seed 0, the model's sampling (query parameters are ours only).
    expected = grpc_converse_defaults(served.channel, heard_by_the_server(CLIP))
    assert expected.startswith(text), (text, expected)


def grpc_converse_defaults(channel, audio):
    from services.core.common_pb2 import PCM_F32LE
    from services.dialogue import dialogue_pb2, dialogue_pb2_grpc

    config = dialogue_pb2.DialogueConfig(input_encoding=PCM_F32LE, input_sample_rate_hertz=24000,
                                         output_encoding=PCM_F32LE)
    requests = [dialogue_pb2.ConverseRequest(config=config),
                dialogue_pb2.ConverseRequest(audio=audio.tobytes())]
    responses = list(dialogue_pb2_grpc.DialogueStub(channel).Converse(iter(requests),
                                                                       timeout=60))
    return "".join(r.text for r in responses)
