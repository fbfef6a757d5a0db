"""ASR on a plain Moshi-architecture LM, served from the LM's own engine while a dialogue
runs on it: the words equal those of the same session run alone on the LM."""

import threading

import numpy as np
import pytest
import torch

from services.asr import asr_pb2, asr_pb2_grpc
from services.asr.delayed_text import DelayedTextASR
from services.asr.service import ASRService
from services.asr.words import clamp_word
from services.builtin import BuiltinTokenizer
from services.core.common_pb2 import PCM_F32LE, SamplingParams
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.moshi_lm.generate import SamplingSettings
from services.moshi_lm.stepper import LMStepper
from tests.conftest import tiny_moshi_server

DELAY = 3
DECODE = BuiltinTokenizer().decode


@pytest.fixture(scope="module")
def setup():
    def asr(engine, cfg, codec, silence):
        return ASRService.on_lm_engine(engine, cfg, DECODE, codec, "tiny", DELAY, silence)

    with tiny_moshi_server(asr) as stack:
        yield stack


def alone(generator, mimi, silence, pcm: np.ndarray):
    """The reference: the clip framed as the service does, stepped alone on the LM."""
    mode = DelayedTextASR(generator.cfg, DELAY, silence)
    samples = np.concatenate([pcm, np.zeros(round((DELAY / 12.5 + 1) * 24000), np.float32)])
    samples = samples[:len(samples) // 1920 * 1920]
    with torch.no_grad():
        codes = mimi.encode(torch.from_numpy(samples)[None, None])[0].T.numpy()
    stepper = LMStepper(generator, 1, max_delay=8)
    stepper.start([0], [mode.stream(SamplingSettings(0.0, 0, seed=0))])
    decoder = mode.decoder(DECODE)
    for step in mode.inputs(codes):
        frame = stepper.step([0], [step])[0]
        if frame is not None:
            decoder.push(frame.text_token)
    decoder.flush()
    return decoder.words


def test_asr_next_to_a_dialogue_on_one_lm(setup):
    channel, generator, mimi, silence = setup
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
    words = [r.word for r in responses if r.HasField("word")]
    # The service ends words inside the client's audio (the flush silence is not speech).
    expected = [clamp_word(w, len(pcm) / 24000) for w in alone(generator, mimi, silence, pcm)]
    assert expected and replies
    assert [(w.text, w.start_seconds, w.end_seconds) for w in words] == \
        [(w.text, pytest.approx(w.start), pytest.approx(w.end)) for w in expected]
    info = asr_pb2_grpc.SpeechRecognitionStub(channel).GetInfo(asr_pb2.GetInfoRequest())
    assert info.text_delay_seconds == pytest.approx(DELAY / 12.5) and not info.pause_prediction
