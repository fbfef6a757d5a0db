"""Finals per utterance: the real Riva client gets a final result at each end of turn our ASR
service reports, mid-stream, and the rest at half-close. The model is the STT-layout golden
checkpoint with pause heads (lm_dev_stt_vad) and a stand-in codec; its random heads never pass
Kyutai's 0.5 threshold, so this service's turn detector uses 0.3 (the same ASRService and
RecognitionMode otherwise)."""

from __future__ import annotations

import base64
import dataclasses

import numpy as np
import pytest

from services.asr import asr_pb2, asr_pb2_grpc
from services.asr.service import ASRService
from services.asr.vad import TurnDetector
from services.core.common_pb2 import PCM_S16LE
from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.core.tick import speech_engine
from services.moshi_lm.generate import LMGenerator
from services.riva.asr import RivaASRService, Utterances
from services.wiring import close_all
from tests.asr.test_asr_service import TIMING, StandInCodec, decode, load
from tests.conftest import load_golden
from tests.riva.conftest import run_riva

RATE = 24_000


@pytest.fixture(scope="module")
def turn_server():
    columns = load_golden("lm_dev_stt_vad_greedy")["user_codes"].numpy()
    model = load("lm_dev_stt_vad")
    # The frame's first sample (in thousandths) names the golden column it is coded as.
    codec = StandInCodec(lambda frame: columns[:, round(float(frame[0]) * 1000) % 30])
    engine = speech_engine(2, LMGenerator(model), codec)
    # Greedy text, as Kyutai's STT checkpoints decode by default.
    cfg = dataclasses.replace(model.cfg, lm_gen_config={"use_sampling": False})
    stt = ASRService.on_stt(engine, cfg, decode, "vad", timing=TIMING)

    def make_mode(sampling, interim, pauses):
        mode = stt.make_mode(sampling, interim, pauses)
        mode.turn = TurnDetector(threshold=0.3)
        return mode

    asr = ASRService(engine, cfg, "vad", make_mode, TIMING, stt.pause_heads)
    services = [asr, RivaASRService(asr)]
    srv, port = create_server(services, "127.0.0.1:0", ServerOptions())
    channel = create_channel(f"127.0.0.1:{port}")
    yield f"127.0.0.1:{port}", channel
    channel.close()
    srv.stop(None)
    close_all(services)
    engine.stop()


def clip_pcm(frames: int = 60) -> bytes:
    pcm = np.zeros((frames, 1920), np.float32)
    pcm[:, 0] = (np.arange(frames) % 29 + 1) / 1000
    return (pcm.reshape(-1) * 32768).round().astype("<i2").tobytes()


def our_utterances(channel, pcm: bytes) -> list[list[tuple[str, int, int]]]:
    """Our stream's final words, grouped by its end-of-turn events."""
    config = asr_pb2.RecognitionConfig(encoding=PCM_S16LE, sample_rate_hertz=RATE,
                                       interim_results=True)
    requests = [asr_pb2.StreamingRecognizeRequest(config=config),
                asr_pb2.StreamingRecognizeRequest(audio=pcm)]
    groups: list[list[tuple[str, int, int]]] = [[]]
    for r in asr_pb2_grpc.SpeechRecognitionStub(channel).StreamingRecognize(iter(requests)):
        if r.HasField("word"):
            assert r.word.HasField("end_seconds"), "an interim word: the grouping below " \
                "would need its end-of-turn rule"
            groups[-1].append((r.word.text, round(r.word.start_seconds * 1000),
                               round(r.word.end_seconds * 1000)))
        elif r.speech_event.kind == asr_pb2.SpeechEvent.END_OF_TURN and groups[-1]:
            groups.append([])
    return [g for g in groups if g]


def test_a_final_per_utterance_mid_stream(riva_python, turn_server):
    address, channel = turn_server
    pcm = clip_pcm()
    expected = our_utterances(channel, pcm)
    assert len(expected) >= 2, "no end of turn inside the clip"
    (result,) = run_riva(riva_python, address, [{
        "call": "streaming", "raw": base64.b64encode(pcm).decode(), "encoding": 1,
        "sample_rate": RATE, "chunk_bytes": 3840}])
    finals = [r for response in result["responses"] for r in response["results"]
              if r.get("is_final")]
    assert [[(w["word"], w.get("start_time", 0), w.get("end_time", 0))
             for w in r["alternatives"][0]["words"]] for r in finals] == expected
    assert [r["alternatives"][0]["transcript"] for r in finals] == \
        ["".join(f"{text} " for text, _, _ in words) for words in expected]
    seconds = len(pcm) / 2 / RATE
    # The first utterance ended while the client's audio was still being processed.
    assert finals[0]["audio_processed"] < seconds - 1
    assert finals[-1]["audio_processed"] == pytest.approx(seconds)


def word(text, start, end=None):
    message = asr_pb2.Word(text=text, start_seconds=start)
    if end is not None:
        message.end_seconds = end
    return asr_pb2.StreamingRecognizeResponse(word=message, audio_processed_seconds=start + 1)


def end_of_turn(time):
    return asr_pb2.StreamingRecognizeResponse(speech_event=asr_pb2.SpeechEvent(
        kind=asr_pb2.SpeechEvent.END_OF_TURN, time_seconds=time), audio_processed_seconds=time)


def test_a_word_open_at_the_end_of_turn_closes_its_utterance():
    """The word being heard when the turn ends belongs to that utterance (ending then); its
    final, which comes with the next word, is not repeated in the next utterance."""
    utterances = Utterances(interim=True, word_times=True, language="en-US")
    utterances.received_seconds = 10.0
    events = [word("hello", 0.5, 0.9), word("there", 1.0), end_of_turn(1.6),
              word("there", 1.0, 1.3), word("again", 3.0), word("again", 3.0, 3.4)]
    results = [r for e in events for r in utterances.event(e)] + utterances.end()
    finals = [r for r in results if r.is_final]
    assert [[(w.word, w.start_time, w.end_time) for w in r.alternatives[0].words]
            for r in finals] == [[("hello", 500, 900), ("there", 1000, 1600)],
                                 [("again", 3000, 3400)]]
    assert [r.alternatives[0].transcript for r in finals] == ["hello there ", "again "]
    interim = [r.alternatives[0].transcript for r in results if not r.is_final]
    assert interim == ["hello ", "hello there ", "again ", "again "]
