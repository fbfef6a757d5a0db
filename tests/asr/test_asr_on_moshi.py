"""ASR on a plain Moshi-architecture LM, served from the LM's own engine while a dialogue
runs on it: the words equal those of the same session run alone on the LM."""

import threading

import numpy as np
import pytest

from services.asr import asr_pb2, asr_pb2_grpc
from services.asr.mode import RecognitionMode, final_words, frames_of_clip
from services.asr.service import ASRService
from services.builtin import BuiltinTokenizer
from services.core.common_pb2 import PCM_F32LE, SamplingParams
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.moshi_lm.generate import SamplingSettings
from tests.conftest import run_alone, tiny_moshi_server

DELAY = 3
DECODE = BuiltinTokenizer().decode


@pytest.fixture(scope="module")
def setup():
    def asr(engine, cfg):
        return ASRService.on_moshi(engine, cfg, DECODE, "tiny", DELAY)

    with tiny_moshi_server(asr) as stack:
        yield stack


def alone(generator, mimi, pcm: np.ndarray):
    """The same recognition alone on a fresh engine of the same models, the clip framed as
    a clip is."""
    mode = RecognitionMode.for_moshi(generator.cfg, DELAY, DECODE, SamplingSettings(0.0, 0))
    return final_words(run_alone(mode, list(frames_of_clip(pcm, mode)), generator, mimi,
                                 max_delay=8))


def test_asr_next_to_a_dialogue_on_one_lm(setup):
    channel, generator, mimi, _ = setup
    pcm = (0.2 * np.random.default_rng(1).standard_normal(24000 * 2)).astype(np.float32)
    dialogue = dialogue_pb2_grpc.DialogueStub(channel)
    replies = []

    def talk():
        config = dialogue_pb2.DialogueConfig(input_encoding=PCM_F32LE,
                                             input_sample_rate_hertz=24000,
                                             output_encoding=PCM_F32LE, seed=3)
        requests = [dialogue_pb2.ConverseRequest(config=config)] + [
            dialogue_pb2.ConverseRequest(audio=c.tobytes()) for c in np.split(pcm, 25)]
        replies.extend(dialogue.Converse(iter(requests)))

    talker = threading.Thread(target=talk)
    talker.start()
    config = asr_pb2.RecognitionConfig(encoding=PCM_F32LE, sample_rate_hertz=24000,
                                       text_sampling=SamplingParams(temperature=0))
    requests = [asr_pb2.StreamingRecognizeRequest(config=config)] + [
        asr_pb2.StreamingRecognizeRequest(audio=c.tobytes()) for c in np.split(pcm, 10)]
    responses = list(asr_pb2_grpc.SpeechRecognitionStub(channel).StreamingRecognize(
        iter(requests)))
    talker.join()
    words = [r.word for r in responses if r.HasField("word") and r.word.HasField("end_seconds")]
    expected = alone(generator, mimi, pcm)
    assert expected and replies
    assert [(w.text, w.start_seconds, w.end_seconds) for w in words] == \
        [(w.text, pytest.approx(w.start), pytest.approx(w.end)) for w in expected]
    info = asr_pb2_grpc.SpeechRecognitionStub(channel).GetInfo(asr_pb2.GetInfoRequest())
    assert info.text_delay_seconds == pytest.approx(DELAY / 12.5) and not info.pause_prediction
