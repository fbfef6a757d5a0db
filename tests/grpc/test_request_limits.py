"""Requests that are small on the wire but ask for unbounded work are refused before the work
(issue 14, items 3 and 4), on real servers with the built-in tiny models: a text flood keeps
the server's memory bounded and stops at cancel, breaks and texts are bounded, Mimi's unary
calls check their audio and reply sizes first."""

import re
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from services.core import stats_pb2, stats_pb2_grpc
from services.core.common_pb2 import PCM_F32LE, PCM_S16LE
from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.core.limits import RequestLimits
from services.mimi import mimi_pb2, mimi_pb2_grpc
from services.tts import tts_pb2, tts_pb2_grpc
from services.wiring import ModelOptions, build_services, close_all
from tests.grpc.conftest import spawn_serve

LIMITS = RequestLimits(max_text_chars=3000, max_break_seconds=2.0,
                       max_unary_audio_seconds=10.0, max_chunk_seconds=5.0,
                       max_reply_audio_bytes=200_000)
AUDIO_DELAY = 4  # frames: short TTS sessions on the tiny Moshi-layout LM
WORDS = "hello world this is a text "


def rss_mb(pid: int) -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1]) / 1024


def engine_figures(channel) -> dict[str, tuple[int, int]]:
    """Engine name -> (active sessions, steps made)."""
    stats = stats_pb2_grpc.EngineStatsStub(channel).GetStats(stats_pb2.GetStatsRequest())
    return {e.name: (e.active_sessions, e.steps) for e in stats.engines}


@pytest.fixture(scope="module")
def limited():
    """(channel, services) of a server of the built-in Mimi and TTS with small LIMITS."""
    services = build_services(["mimi", "tts"], ModelOptions(
        max_sessions=2, tts_audio_delay=AUDIO_DELAY, limits=LIMITS))
    server, port = create_server(services, "127.0.0.1:0", ServerOptions())
    channel = create_channel(f"127.0.0.1:{port}")
    yield channel
    channel.close()
    server.stop(None)
    close_all(services)


def synthesize(channel, text: str) -> tts_pb2.SynthesizeResponse:
    return tts_pb2_grpc.SpeechSynthesisStub(channel).Synthesize(tts_pb2.SynthesizeRequest(
        config=tts_pb2.SynthesisConfig(encoding=PCM_S16LE), text=text), timeout=60)


def refused(call, *args) -> tuple[str, float]:
    """(the message, seconds it took) of a call that must end with INVALID_ARGUMENT."""
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        call(*args)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return caught.value.details(), time.monotonic() - started


# ---- TTS ---------------------------------------------------------------------------------------

def test_a_text_flood_keeps_the_server_small_and_cancel_stops_its_work():
    """A client sends 16 MB of text as fast as it can and reads slowly: the server takes the
    text in only as it speaks it (before: +750 MB for 10 MB), and cancel ends the work."""
    process, port = spawn_serve("--services", "tts", "--threads", "1",
                                "--max-text-chars", "100000000", "--max-break-seconds", "1")
    try:
        with create_channel(f"127.0.0.1:{port}") as channel:
            message, _ = refused(synthesize, channel, '<break time="1.5s"/>')
            assert "longest allowed, 1 s" in message  # serve's flags reach the service
            before = rss_mb(process.pid)
            message = WORDS * (4096 // len(WORDS))
            sent = [0]

            def requests():
                yield tts_pb2.StreamingSynthesizeRequest(
                    config=tts_pb2.SynthesisConfig(encoding=PCM_S16LE))
                while sent[0] < 16 << 20:
                    sent[0] += len(message)
                    yield tts_pb2.StreamingSynthesizeRequest(text=message)

            call = tts_pb2_grpc.SpeechSynthesisStub(channel).StreamingSynthesize(requests())
            read = [0]

            def read_slowly():
                try:
                    for _ in call:
                        read[0] += 1
                        time.sleep(0.2)
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.CANCELLED, error

            reader = threading.Thread(target=read_slowly)
            reader.start()
            time.sleep(5)
            grown = rss_mb(process.pid) - before
            assert read[0] > 0 and sent[0] > 1 << 20  # the flood was real
            assert grown < 48, f"server RSS grew {grown:.0f} MB under a text flood"
            call.cancel()
            reader.join(10)
            time.sleep(1)
            active, steps = engine_figures(channel)["moshi_lm"]
            time.sleep(1.5)
            assert engine_figures(channel)["moshi_lm"] == (0, steps) and active == 0
            grown = rss_mb(process.pid) - before
            assert grown < 48, f"server RSS grew {grown:.0f} MB after the cancel"
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.parametrize("tag", ['<break time="99999999s"/>', '<break time="1e400s"/>',
                                 '<break time="2.5s"/>', "<break time=forever>"])
def test_an_overlong_or_malformed_break_is_refused_at_once(limited, tag):
    message, seconds = refused(synthesize, limited, f"Hello {tag} world.")
    assert "break" in message and "2 s" in message
    assert seconds < 5  # before: the slot was held until the client's deadline
    assert engine_figures(limited)["moshi_lm"][0] == 0


def test_a_break_at_the_bound_is_spoken_and_frees_its_slot(limited):
    response = synthesize(limited, '<break time="2s"/>')  # 19 bytes of text
    tail = (AUDIO_DELAY + 1 + 4) / 12.5  # the delays and final padding after the text
    assert 2.0 <= response.audio_seconds <= 2.0 + tail + 0.5
    assert engine_figures(limited)["moshi_lm"][0] == 0


def test_a_break_split_across_stream_messages_is_checked_whole(limited):
    pieces = ["Hello <break ti", 'me="999', 's"/> world.']

    def stream():
        requests = [tts_pb2.StreamingSynthesizeRequest(
            config=tts_pb2.SynthesisConfig(encoding=PCM_S16LE))]
        requests += [tts_pb2.StreamingSynthesizeRequest(text=p) for p in pieces]
        return list(tts_pb2_grpc.SpeechSynthesisStub(limited).StreamingSynthesize(
            iter(requests), timeout=60))

    message, _ = refused(stream)
    assert "999 s" in message


def test_text_past_the_request_limit_is_refused(limited):
    message, seconds = refused(synthesize, limited, "word " * 601)  # 3005 characters
    assert "3000 characters" in message and seconds < 5

    def stream():  # the same limit over a whole stream
        requests = [tts_pb2.StreamingSynthesizeRequest(
            config=tts_pb2.SynthesisConfig(encoding=PCM_S16LE))]
        requests += [tts_pb2.StreamingSynthesizeRequest(text="word " * 100)] * 7
        return list(tts_pb2_grpc.SpeechSynthesisStub(limited).StreamingSynthesize(
            iter(requests), timeout=120))

    message, _ = refused(stream)
    assert "3000 characters" in message
    under = tts_pb2_grpc.SpeechSynthesisStub(limited).SynthesizeOnline(
        tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesisConfig(encoding=PCM_S16LE),
                                  text="word " * 599), timeout=120)
    assert len(next(under).audio) > 0  # under the limit: being spoken (the rest not awaited)
    under.cancel()


def test_a_unary_reply_past_the_message_limit_stops_early(limited):
    """200 kB of s16 is about 4 s: a longer text fails as soon as its audio passes that."""
    message, _ = refused(synthesize, limited, "hello " * 400)
    assert "SynthesizeOnline" in message
    assert engine_figures(limited)["moshi_lm"][0] == 0


# ---- Mimi --------------------------------------------------------------------------------------

def codes(frames: int, k: int = 8) -> mimi_pb2.Codes:
    return mimi_pb2.Codes(num_codebooks=k, num_frames=frames, codes=[1] * (k * frames))


def decode(channel, frames: int, encoding=PCM_F32LE) -> mimi_pb2.DecodeResponse:
    return mimi_pb2_grpc.MimiStub(channel).Decode(
        mimi_pb2.DecodeRequest(codes=codes(frames), encoding=encoding), timeout=60)


def encode(channel, audio: bytes, rate: int, encoding=PCM_S16LE) -> mimi_pb2.EncodeResponse:
    return mimi_pb2_grpc.MimiStub(channel).Encode(mimi_pb2.EncodeRequest(
        config=mimi_pb2.EncodeConfig(encoding=encoding, sample_rate_hertz=rate),
        audio=audio), timeout=60)


def test_decode_checks_duration_and_reply_size_before_computing(limited):
    message, seconds = refused(decode, limited, 16_000)  # 1280 s; 23.5 s of CPU before
    assert "at most 10 s" in message and seconds < 5
    # 27 frames: 207 360 bytes of f32, over the 200 000-byte reply limit; s16 is half.
    message, _ = refused(decode, limited, 27)
    assert "reply limit" in message and "PCM_S16LE" in message
    assert decode(limited, 27, PCM_S16LE).num_samples == 27 * 1920
    assert len(decode(limited, 8).audio) == 8 * 1920 * 4


def test_encode_bounds_the_audio_at_24_khz_whatever_the_input_rate(limited):
    low_rate = np.zeros(1 << 19, "<i2").tobytes()  # 1 MiB at 1 kHz: 524 s once at 24 kHz
    message, seconds = refused(encode, limited, low_rate, 1000)
    assert "at most 10 s" in message and "524" in message and seconds < 5
    message, _ = refused(encode, limited, np.zeros(24_000 * 11, "<i2").tobytes(), 24_000)
    assert "11.0 s" in message
    assert encode(limited, np.zeros(8000 * 2, "<i2").tobytes(), 8000).num_samples == 48_000


def test_a_streaming_encode_message_is_bounded(limited):
    def stream(chunk_seconds: float):
        audio = np.zeros(int(1000 * chunk_seconds), "<i2").tobytes()
        requests = [mimi_pb2.StreamingEncodeRequest(config=mimi_pb2.EncodeConfig(
            encoding=PCM_S16LE, sample_rate_hertz=1000)),
            mimi_pb2.StreamingEncodeRequest(audio=audio)]
        return list(mimi_pb2_grpc.MimiStub(limited).StreamingEncode(iter(requests),
                                                                     timeout=60))

    message, _ = refused(stream, 6.0)
    assert "at most 5 s per message" in message
    assert len(stream(4.0)) == 50  # 4 s: 50 frames of 80 ms
