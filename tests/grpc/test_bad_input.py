"""The bad-input matrix of issue 14 as one parametrised test over real channels: service x case
x expected status x "the next good request succeeds". Every RPC of every service gets
malformed bytes; the streams get config-less calls, second configs and bad samples; each field
with a rule gets a value that breaks it. No case may end with OK (an error turned into a normal
end), and after each one the service still answers a good request."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from services.asr import asr_pb2, asr_pb2_grpc
from services.core import stats_pb2, stats_pb2_grpc
from services.core.common_pb2 import PCM_F32LE, PCM_S16LE, CodeFrame, SamplingParams
from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.mimi import mimi_pb2, mimi_pb2_grpc
from services.moshi_lm import moshi_lm_pb2, moshi_lm_pb2_grpc
from services.tts import tts_pb2, tts_pb2_grpc
from services.wiring import ModelOptions, build_services, close_all

INVALID = grpc.StatusCode.INVALID_ARGUMENT
# Seconds: the config-less cases wait this long; long enough that a loaded machine still gets
# every other case's first message in.
CONFIG_TIMEOUT = 2.0
TOKEN = "matrix-token"
OPTIONS = ModelOptions(max_sessions=4, asr_text_delay=3, tts_audio_delay=4, idle_timeout=10)
CODEBOOKS = 8  # the built-in LM's input and output codebooks, Mimi's default
NAN, INF = float("nan"), float("inf")
RATE = 24_000


def f32(values) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


SILENCE = f32(np.zeros(1920))  # one frame
NAN_AUDIO, INF_AUDIO, HUGE_AUDIO = f32([0, NAN, 0]), f32([0, -INF]), f32([0.1, 1e30])


@dataclasses.dataclass(frozen=True)
class Servers:
    open: grpc.Channel
    authenticated: grpc.Channel  # a server that wants "authorization: Bearer TOKEN"


@pytest.fixture(scope="module")
def servers():
    built, channels = [], []
    for options in (ServerOptions(config_timeout=CONFIG_TIMEOUT),
                    ServerOptions(auth_token=TOKEN, config_timeout=CONFIG_TIMEOUT)):
        services = build_services(None, OPTIONS)
        server, port = create_server(services, "127.0.0.1:0", options)
        built.append((services, server))
        channels.append(create_channel(f"127.0.0.1:{port}"))
    yield Servers(*channels)
    for channel in channels:
        channel.close()
    for services, server in built:
        server.stop(None).wait()
        close_all(services)


# ---- raw wire bytes ------------------------------------------------------------------------

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): message, string or bytes."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def raw_codes(codes: Iterable[int]) -> bytes:
    """A CodeFrame whose codes are written as raw (unpacked) varints, any width."""
    return b"".join(varint(1 << 3 | 0) + varint(c) for c in codes)


MALFORMED = b"\x0a\xff\xff\xff\xff"  # field 1, length-delimited, a length past the end
BAD_UTF8 = b"\xc3\x28"


def unary_raw(channel, method: str, payload: bytes) -> None:
    channel.unary_unary(method)(payload, timeout=10)


def stream_raw(channel, method: str, payloads: list[bytes]) -> None:
    call = channel.stream_stream(method)(iter(payloads), timeout=10)
    for _ in call:
        pass


def server_stream_raw(channel, method: str, payload: bytes) -> None:
    for _ in channel.unary_stream(method)(payload, timeout=10):
        pass


# ---- requests of each service --------------------------------------------------------------

ASR_CONFIG = asr_pb2.RecognitionConfig(encoding=PCM_F32LE, sample_rate_hertz=RATE)
ENCODE_CONFIG = mimi_pb2.EncodeConfig(encoding=PCM_F32LE, sample_rate_hertz=RATE)
DECODE_CONFIG = mimi_pb2.DecodeConfig(num_codebooks=CODEBOOKS, encoding=PCM_F32LE)
DIALOGUE_CONFIG = dialogue_pb2.DialogueConfig(input_encoding=PCM_F32LE,
                                              input_sample_rate_hertz=RATE,
                                              output_encoding=PCM_F32LE)
TTS_CONFIG = tts_pb2.SynthesisConfig(encoding=PCM_F32LE)
LM_CONFIG = moshi_lm_pb2.GenerateConfig()


def recognize_stream(channel, requests: list, metadata=None) -> list:
    stub = asr_pb2_grpc.SpeechRecognitionStub(channel)
    return list(stub.StreamingRecognize(iter(requests), timeout=20, metadata=metadata))


def asr(*later) -> Callable[[grpc.Channel], object]:
    first = asr_pb2.StreamingRecognizeRequest(config=ASR_CONFIG)
    return lambda channel: recognize_stream(channel, [first, *later])


def asr_audio(data: bytes) -> asr_pb2.StreamingRecognizeRequest:
    return asr_pb2.StreamingRecognizeRequest(audio=data)


def recognize(config=ASR_CONFIG, audio=SILENCE) -> Callable:
    return lambda channel: asr_pb2_grpc.SpeechRecognitionStub(channel).Recognize(
        asr_pb2.RecognizeRequest(config=config, audio=audio), timeout=20)


def encode(config=ENCODE_CONFIG, audio=SILENCE) -> Callable:
    return lambda channel: mimi_pb2_grpc.MimiStub(channel).Encode(
        mimi_pb2.EncodeRequest(config=config, audio=audio), timeout=20)


def decode(codes: list[int], num_codebooks=CODEBOOKS, num_frames=1) -> Callable:
    request = mimi_pb2.DecodeRequest(codes=mimi_pb2.Codes(
        num_codebooks=num_codebooks, num_frames=num_frames, codes=codes), encoding=PCM_F32LE)
    return lambda channel: mimi_pb2_grpc.MimiStub(channel).Decode(request, timeout=20)


def streaming_encode(*later, config=ENCODE_CONFIG) -> Callable:
    requests = [mimi_pb2.StreamingEncodeRequest(config=config), *later]
    return lambda channel: list(mimi_pb2_grpc.MimiStub(channel).StreamingEncode(
        iter(requests), timeout=20))


def streaming_decode_raw(frame: bytes) -> Callable:
    """StreamingDecode with one frame written byte by byte (codes as raw varints)."""
    requests = [mimi_pb2.StreamingDecodeRequest(config=DECODE_CONFIG).SerializeToString(),
                field(2, frame)]
    return lambda channel: stream_raw(channel, "/services.mimi.Mimi/StreamingDecode", requests)


def generate(*later, config=LM_CONFIG) -> Callable:
    requests = [moshi_lm_pb2.GenerateRequest(config=config), *later]
    return lambda channel: list(moshi_lm_pb2_grpc.MoshiLMStub(channel).Generate(
        iter(requests), timeout=20))


def user_frame(codes) -> moshi_lm_pb2.GenerateRequest:
    return moshi_lm_pb2.GenerateRequest(user_frame=CodeFrame(codes=list(codes)))


def converse(*later, config=DIALOGUE_CONFIG) -> Callable:
    requests = [dialogue_pb2.ConverseRequest(config=config), *later]
    return lambda channel: list(dialogue_pb2_grpc.DialogueStub(channel).Converse(
        iter(requests), timeout=20))


def dialogue_audio(data: bytes) -> dialogue_pb2.ConverseRequest:
    return dialogue_pb2.ConverseRequest(audio=data)


def synthesize(text: str, config=TTS_CONFIG) -> Callable:
    return lambda channel: tts_pb2_grpc.SpeechSynthesisStub(channel).Synthesize(
        tts_pb2.SynthesizeRequest(config=config, text=text), timeout=20)


def synthesize_online(text: str, config=TTS_CONFIG) -> Callable:
    return lambda channel: list(tts_pb2_grpc.SpeechSynthesisStub(channel).SynthesizeOnline(
        tts_pb2.SynthesizeRequest(config=config, text=text), timeout=20))


def streaming_synthesize(*texts: str, config=TTS_CONFIG, end: bool = True) -> Callable:
    requests = [tts_pb2.StreamingSynthesizeRequest(config=config)] + [
        tts_pb2.StreamingSynthesizeRequest(text=t) for t in texts] + (
        [tts_pb2.StreamingSynthesizeRequest(end_of_input=tts_pb2.EndOfInput())] if end else [])
    return lambda channel: list(tts_pb2_grpc.SpeechSynthesisStub(channel).StreamingSynthesize(
        iter(requests), timeout=20))


def config_less(method: str) -> Callable:
    """A stream that opens and never sends its config (it holds its request stream open)."""
    def call(channel):
        def never():
            time.sleep(CONFIG_TIMEOUT * 3)  # well past the server's config timeout
            yield b""
        stream_raw(channel, method, never())

    return call


# The next good request of each service: it must succeed after every bad case.
GOOD: dict[str, Callable[[grpc.Channel], object]] = {
    "mimi": lambda channel: encode()(channel),
    "lm": lambda channel: generate(*[user_frame([0] * CODEBOOKS)] * 3)(channel),
    "dialogue": lambda channel: converse(*[dialogue_audio(SILENCE)] * 3)(channel),
    "asr": lambda channel: recognize_stream(channel, [
        asr_pb2.StreamingRecognizeRequest(config=ASR_CONFIG), asr_audio(SILENCE * 5)]),
    "tts": lambda channel: synthesize("hello there")(channel),
    "health": lambda channel: health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5),
    "stats": lambda channel: stats_pb2_grpc.EngineStatsStub(channel).GetStats(
        stats_pb2.GetStatsRequest(), timeout=5),
    "reflection": lambda channel: ProtoReflectionDescriptorDatabase(channel).get_services(),
}

GOOD_WITH_TOKEN = lambda channel: recognize_stream(  # noqa: E731
    channel, [asr_pb2.StreamingRecognizeRequest(config=ASR_CONFIG), asr_audio(SILENCE * 5)],
    metadata=(("authorization", f"Bearer {TOKEN}"),))

# Every RPC of the server: (service, full method, request streaming, response streaming).
RPCS = [
    ("mimi", "/services.mimi.Mimi/GetInfo", False, False),
    ("mimi", "/services.mimi.Mimi/Encode", False, False),
    ("mimi", "/services.mimi.Mimi/Decode", False, False),
    ("mimi", "/services.mimi.Mimi/StreamingEncode", True, True),
    ("mimi", "/services.mimi.Mimi/StreamingDecode", True, True),
    ("lm", "/services.moshi_lm.MoshiLM/GetInfo", False, False),
    ("lm", "/services.moshi_lm.MoshiLM/Generate", True, True),
    ("dialogue", "/services.dialogue.Dialogue/GetInfo", False, False),
    ("dialogue", "/services.dialogue.Dialogue/Converse", True, True),
    ("asr", "/services.asr.SpeechRecognition/GetInfo", False, False),
    ("asr", "/services.asr.SpeechRecognition/Recognize", False, False),
    ("asr", "/services.asr.SpeechRecognition/StreamingRecognize", True, True),
    ("tts", "/services.tts.SpeechSynthesis/GetInfo", False, False),
    ("tts", "/services.tts.SpeechSynthesis/ListVoices", False, False),
    ("tts", "/services.tts.SpeechSynthesis/Synthesize", False, False),
    ("tts", "/services.tts.SpeechSynthesis/SynthesizeOnline", False, True),
    ("tts", "/services.tts.SpeechSynthesis/StreamingSynthesize", True, True),
    ("health", "/grpc.health.v1.Health/Check", False, False),
    ("health", "/grpc.health.v1.Health/Watch", False, True),
    ("stats", "/services.core.EngineStats/GetStats", False, False),
    ("reflection", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", True,
     True),
]


def raw_call(method: str, request_streaming: bool, response_streaming: bool,
             payloads: list[bytes]) -> Callable:
    if request_streaming:
        return lambda channel: stream_raw(channel, method, payloads)
    if response_streaming:
        return lambda channel: server_stream_raw(channel, method, payloads[0])
    return lambda channel: unary_raw(channel, method, payloads[0])


@dataclasses.dataclass(frozen=True)
class Case:
    service: str
    name: str
    call: Callable[[grpc.Channel], object]
    status: grpc.StatusCode = INVALID
    says: str = ""  # a piece of the status message
    authenticated: bool = False  # on the server that wants a token


def malformed_cases() -> list[Case]:
    cases = []
    for service, method, streams_in, streams_out in RPCS:
        rpc = method.rsplit("/", 1)[1]
        cases.append(Case(service, f"{rpc}: malformed protobuf",
                          raw_call(method, streams_in, streams_out, [MALFORMED]),
                          says="malformed request"))
    return cases


CASES = [
    *malformed_cases(),
    # Invalid UTF-8 in a string field, first or later message.
    Case("tts", "Synthesize: text of invalid UTF-8",
         raw_call("/services.tts.SpeechSynthesis/Synthesize", False, False,
                  [field(2, BAD_UTF8)]), says="malformed request"),
    Case("tts", "SynthesizeOnline: voice of invalid UTF-8",
         raw_call("/services.tts.SpeechSynthesis/SynthesizeOnline", False, True,
                  [field(1, field(1, BAD_UTF8))]), says="malformed request"),
    Case("tts", "StreamingSynthesize: text chunk of invalid UTF-8",
         raw_call("/services.tts.SpeechSynthesis/StreamingSynthesize", True, True,
                  [tts_pb2.StreamingSynthesizeRequest(config=TTS_CONFIG).SerializeToString(),
                   field(2, BAD_UTF8)]), says="malformed request"),
    Case("health", "Check: service name of invalid UTF-8",
         raw_call("/grpc.health.v1.Health/Check", False, False, [field(1, BAD_UTF8)]),
         says="malformed request"),
    Case("asr", "StreamingRecognize: a later message malformed",
         raw_call("/services.asr.SpeechRecognition/StreamingRecognize", True, True,
                  [asr_pb2.StreamingRecognizeRequest(config=ASR_CONFIG).SerializeToString(),
                   MALFORMED]), says="malformed request"),
    # Streams that never send their config (issue item 1).
    *[Case(service, f"{method.rsplit('/', 1)[1]}: no config within the config timeout",
           config_less(method), grpc.StatusCode.DEADLINE_EXCEEDED, "no config within")
      for service, method, streams_in, _ in RPCS if streams_in],
    # ASR streams (item 7): each an error, never OK with zero responses.
    Case("asr", "StreamingRecognize: a second config",
         asr(asr_audio(SILENCE), asr_pb2.StreamingRecognizeRequest(config=ASR_CONFIG)),
         says="one config"),
    Case("asr", "StreamingRecognize: NaN samples", asr(asr_audio(NAN_AUDIO)), says="NaN"),
    Case("asr", "StreamingRecognize: infinite samples", asr(asr_audio(INF_AUDIO)),
         says="infinite"),
    Case("asr", "StreamingRecognize: 1e30 samples", asr(asr_audio(HUGE_AUDIO)),
         says="full scale"),
    Case("asr", "StreamingRecognize: odd byte count for s16",
         lambda channel: recognize_stream(channel, [
             asr_pb2.StreamingRecognizeRequest(config=asr_pb2.RecognitionConfig(
                 encoding=PCM_S16LE, sample_rate_hertz=RATE)), asr_audio(b"\0" * 101)]),
         says="multiple of 2 bytes"),
    Case("asr", "StreamingRecognize: f32 chunk not a multiple of 4 bytes",
         asr(asr_audio(b"\0" * 10)), says="multiple of 4 bytes"),
    Case("asr", "StreamingRecognize: audio before the config",
         lambda channel: recognize_stream(channel, [asr_audio(SILENCE)]), says="first request"),
    Case("asr", "StreamingRecognize: no message at all",
         lambda channel: recognize_stream(channel, []), says="ended before its config"),
    Case("asr", "StreamingRecognize: unspecified encoding",
         lambda channel: recognize_stream(channel, [asr_pb2.StreamingRecognizeRequest(
             config=asr_pb2.RecognitionConfig(sample_rate_hertz=RATE))]), says="encoding"),
    Case("asr", "StreamingRecognize: NaN temperature",
         lambda channel: recognize_stream(channel, [asr_pb2.StreamingRecognizeRequest(
             config=asr_pb2.RecognitionConfig(
                 encoding=PCM_F32LE, sample_rate_hertz=RATE,
                 text_sampling=SamplingParams(temperature=NAN)))]), says="temperature"),
    Case("asr", "Recognize: NaN samples", recognize(audio=NAN_AUDIO), says="NaN"),
    Case("asr", "Recognize: 1e30 samples", recognize(audio=HUGE_AUDIO), says="full scale"),
    Case("asr", "Recognize: sample rate 0",
         recognize(config=asr_pb2.RecognitionConfig(encoding=PCM_F32LE)),
         says="sample_rate_hertz"),
    Case("asr", "Recognize: seed of 2**63",
         recognize(config=asr_pb2.RecognitionConfig(encoding=PCM_F32LE,
                                                    sample_rate_hertz=RATE, seed=1 << 63)),
         says="seed"),
    # Mimi.
    Case("mimi", "Encode: 1e30 samples", encode(audio=HUGE_AUDIO), says="full scale"),
    Case("mimi", "Encode: infinite samples", encode(audio=INF_AUDIO), says="infinite"),
    Case("mimi", "Encode: f32 audio not a multiple of 4 bytes", encode(audio=b"\0" * 7),
         says="multiple of 4 bytes"),
    Case("mimi", "Decode: a code out of range", decode([5000] + [0] * (CODEBOOKS - 1)),
         says="out of range"),
    Case("mimi", "Decode: a negative code", decode([-1] + [0] * (CODEBOOKS - 1)),
         says="out of range"),
    Case("mimi", "StreamingEncode: NaN samples", streaming_encode(
        mimi_pb2.StreamingEncodeRequest(audio=NAN_AUDIO)), says="NaN"),
    Case("mimi", "StreamingEncode: a second config", streaming_encode(
        mimi_pb2.StreamingEncodeRequest(audio=SILENCE),
        mimi_pb2.StreamingEncodeRequest(config=ENCODE_CONFIG)), says="one config"),
    # A varint wider than 32 bits arrives truncated (the protos say so): 2**32 + 5000 reads as
    # 5000, out of range, so still INVALID_ARGUMENT.
    Case("mimi", "StreamingDecode: code 2**32 + 5000 as a raw varint",
         streaming_decode_raw(raw_codes([(1 << 32) + 5000] + [0] * (CODEBOOKS - 1))),
         says="out of range"),
    Case("mimi", "StreamingDecode: wrong codebook count",
         streaming_decode_raw(raw_codes([0] * (CODEBOOKS - 1))), says="codebooks"),
    # The LM.
    Case("lm", "Generate: a code out of range", generate(user_frame([4096] * CODEBOOKS)),
         says="out of range"),
    Case("lm", "Generate: wrong codebook count", generate(user_frame([0] * 3)),
         says="codebooks"),
    Case("lm", "Generate: infinite audio temperature", generate(config=moshi_lm_pb2.GenerateConfig(
        audio_sampling=SamplingParams(temperature=INF))), says="temperature"),
    Case("lm", "Generate: negative top_k", generate(config=moshi_lm_pb2.GenerateConfig(
        text_sampling=SamplingParams(top_k=-1))), says="top_k"),
    Case("lm", "Generate: a second config", generate(
        user_frame([0] * CODEBOOKS), moshi_lm_pb2.GenerateRequest(
            config=moshi_lm_pb2.GenerateConfig())), says="one config"),
    # The dialogue.
    Case("dialogue", "Converse: NaN samples", converse(dialogue_audio(NAN_AUDIO)), says="NaN"),
    Case("dialogue", "Converse: 1e30 samples", converse(dialogue_audio(HUGE_AUDIO)),
         says="full scale"),
    Case("dialogue", "Converse: unspecified output encoding", converse(
        config=dialogue_pb2.DialogueConfig(input_encoding=PCM_F32LE,
                                           input_sample_rate_hertz=RATE)), says="encoding"),
    Case("dialogue", "Converse: NaN text temperature", converse(
        config=dialogue_pb2.DialogueConfig(
            input_encoding=PCM_F32LE, input_sample_rate_hertz=RATE, output_encoding=PCM_F32LE,
            text_sampling=SamplingParams(temperature=NAN))), says="temperature"),
    Case("dialogue", "Converse: a second config", converse(
        dialogue_audio(SILENCE), dialogue_pb2.ConverseRequest(config=DIALOGUE_CONFIG)),
         says="one config"),
    # TTS: one rule per field, the same in every RPC (item 8).
    *[Case("tts", f"{name}: empty text", call, says="text is empty")
      for name, call in (("Synthesize", synthesize("")),
                         ("Synthesize", synthesize("  \n")),
                         ("SynthesizeOnline", synthesize_online("")),
                         ("StreamingSynthesize", streaming_synthesize()),
                         ("StreamingSynthesize, blank chunks", streaming_synthesize(" ", "\t")),
                         ("StreamingSynthesize, half-closed", streaming_synthesize(end=False)))],
    *[Case("tts", f"{name}: NaN cfg_coef", make("hello", config=tts_pb2.SynthesisConfig(
        encoding=PCM_F32LE, cfg_coef=NAN)), says="cfg_coef")
      for name, make in (("Synthesize", synthesize), ("SynthesizeOnline", synthesize_online),
                         ("StreamingSynthesize", streaming_synthesize))],
    *[Case("tts", f"{name}: infinite speed_bias", make("hello", config=tts_pb2.SynthesisConfig(
        encoding=PCM_F32LE, speed_bias=-INF)), says="speed_bias")
      for name, make in (("Synthesize", synthesize), ("StreamingSynthesize",
                                                      streaming_synthesize))],
    Case("tts", "Synthesize: too many codebooks", synthesize("hello", tts_pb2.SynthesisConfig(
        encoding=PCM_F32LE, num_codebooks=99)), says="num_codebooks"),
    Case("tts", "Synthesize: a voice path out of the voices folder", synthesize(
        "hello", tts_pb2.SynthesisConfig(encoding=PCM_F32LE, voice="../../etc/passwd")),
         says="voice"),
    Case("tts", "StreamingSynthesize: a second config", lambda channel: list(
        tts_pb2_grpc.SpeechSynthesisStub(channel).StreamingSynthesize(iter([
            tts_pb2.StreamingSynthesizeRequest(config=TTS_CONFIG),
            tts_pb2.StreamingSynthesizeRequest(text="hello"),
            tts_pb2.StreamingSynthesizeRequest(config=TTS_CONFIG)]), timeout=20)),
         says="one config"),
    # Authentication (item 9), on the server that wants a token.
    Case("asr", "two authorization headers", lambda channel: recognize_stream(
        channel, [asr_pb2.StreamingRecognizeRequest(config=ASR_CONFIG)],
        metadata=(("authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer other"))),
         grpc.StatusCode.UNAUTHENTICATED, "exactly one", authenticated=True),
    Case("asr", "two identical authorization headers", lambda channel: recognize_stream(
        channel, [asr_pb2.StreamingRecognizeRequest(config=ASR_CONFIG)],
        metadata=(("authorization", f"Bearer {TOKEN}"),) * 2),
         grpc.StatusCode.UNAUTHENTICATED, "exactly one", authenticated=True),
    Case("asr", "no authorization header", lambda channel: recognize_stream(
        channel, [asr_pb2.StreamingRecognizeRequest(config=ASR_CONFIG)]),
         grpc.StatusCode.UNAUTHENTICATED, "missing bearer token", authenticated=True),
    Case("asr", "a malformed request without a token",
         raw_call("/services.asr.SpeechRecognition/Recognize", False, False, [MALFORMED]),
         says="malformed request", authenticated=True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.service}: {case.name}")
def test_bad_input_gets_its_status_and_the_next_good_request_succeeds(servers, case):
    channel = servers.authenticated if case.authenticated else servers.open
    with pytest.raises(grpc.RpcError) as error:  # an OK here is an error turned into OK
        case.call(channel)
    assert error.value.code() == case.status, error.value.details()
    assert case.says in error.value.details()
    if case.authenticated:  # the same call with the one right header
        assert GOOD_WITH_TOKEN(channel)
    else:
        assert GOOD[case.service](channel)
