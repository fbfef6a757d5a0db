"""Synthesis on the tick against the golden tts_dev runs (greedy), both scripts in one batch
of the engine, the codec decoding in the same tick."""

import json
from functools import partial

import numpy as np
import pytest
import sentencepiece

from services.core.checkpoint import build_on_meta, load_into, load_state_dict
from services.core.engine import run_session
from services.core.tick import speech_engine
from services.mimi.loading import load_mimi
from services.moshi_lm.config import LMConfig
from services.moshi_lm.generate import LMGenerator, SamplingSettings
from services.tts.conditioning import load_voice
from services.tts.mode import SynthesisMode, TTSRequest, check_request
from services.tts.model import TTSModel
from tests.conftest import FIXTURES, concurrently

GOLDEN = np.load(FIXTURES / "tts_dev_golden.npz")
META = json.loads(str(GOLDEN["meta"]))
CONFIG = LMConfig.from_dict(json.loads((FIXTURES / "tts_dev.json").read_text())["kyutai_config"])


class Recorded(SynthesisMode):
    """Keeps what each step fed and returned, for the comparison with the golden run."""

    def choose_text(self, proposed):
        fed = super().choose_text(proposed)
        self.fed = [*getattr(self, "fed", []), fed]
        return fed

    def output(self, result):
        self.frames_out = [*getattr(self, "frames_out", []), result.frame]
        if result.pcm is not None:
            self.decoded = [*getattr(self, "decoded", []), np.clip(result.pcm, -1, 1)]
        return super().output(result)


def tts_model():
    return load_into(build_on_meta(lambda: TTSModel(CONFIG)),
                     load_state_dict(FIXTURES / "tts_dev.safetensors")).eval()


def tokenizer():
    return sentencepiece.SentencePieceProcessor(
        model_file=str(FIXTURES / "tts_dev_tokenizer.model"))


def synthesize(requests: dict[int, tuple[TTSRequest, str]]):
    """Runs the requests concurrently on one engine; returns {key: (mode, chunks)}."""
    model, voice = tts_model(), load_voice(FIXTURES / "tts_dev_voice.safetensors")
    mimi = load_mimi(FIXTURES / "mimi_dev.safetensors", num_codebooks=16)
    engine = speech_engine(3, LMGenerator(model), mimi, voice_length=voice.shape[-1])
    try:
        modes = {}
        for key, (request, _) in requests.items():
            check_request(model, request, voice.shape[-1])
            modes[key] = Recorded.for_tts(model, tokenizer(), request)
        sessions = {key: engine.open(mode) for key, mode in modes.items()}
        # The sessions' inputs are fed from threads: both run in the same ticks.
        results = concurrently({k: partial(run_session, sessions[k], [requests[k][1]])
                                for k in requests})
        results = {k: [c for c in chunks if c is not None] for k, chunks in results.items()}
        return {k: (modes[k], results[k]) for k in requests}
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def runs():
    voice = load_voice(FIXTURES / "tts_dev_voice.safetensors")
    request = TTSRequest(voices=(voice,), cfg_coef=2.0, sampling=SamplingSettings.greedy())
    return synthesize({k: (request, META["scripts"][f"script{k}"]["text"]) for k in (0, 1)})


@pytest.mark.parametrize("k", [0, 1])
def test_tokens_frames_and_words_match_golden(runs, k):
    mode, chunks = runs[k]
    script = META["scripts"][f"script{k}"]
    assert len(mode.fed) == script["n_steps"]
    assert mode.fed == GOLDEN[f"s{k}_text_fed"].tolist()
    assert mode.machine.end_step == script["end_step"]
    assert mode.machine.consumption_times == GOLDEN[f"s{k}_consumption_times"].tolist()
    frames = GOLDEN[f"s{k}_frames"]
    got = [f for f in mode.frames_out if f is not None]
    np.testing.assert_array_equal(np.stack(got)[:, 1:], frames[:, 1:])
    words = [w for c in chunks for w in c.words]
    assert [(w.text, w.step) for w in words] == [tuple(t) for t in script["transcript"]]
    assert [w.start for w in words] == [(s - 2) / 12.5 for _, s in script["transcript"]]
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])


@pytest.mark.parametrize("k", [0, 1])
def test_audio_matches_golden(runs, k):
    mode, chunks = runs[k]
    np.testing.assert_allclose(np.concatenate(mode.decoded), GOLDEN[f"s{k}_pcm_all"],
                               atol=1e-4, rtol=0)
    pcm = np.concatenate([c.audio for c in chunks])
    np.testing.assert_allclose(pcm, GOLDEN[f"s{k}_pcm"], atol=1e-4, rtol=0)
    assert chunks[-1].audio_seconds == len(pcm) / 24000


def test_fewer_codebooks_and_speed_bias():
    voice = load_voice(FIXTURES / "tts_dev_voice.safetensors")
    text = META["scripts"]["script0"]["text"]
    greedy = SamplingSettings.greedy()
    runs = synthesize({0: (TTSRequest(voices=(voice,), sampling=greedy), text),
                       1: (TTSRequest(voices=(voice,), sampling=greedy, num_codebooks=6), text),
                       2: (TTSRequest(voices=(voice,), sampling=greedy, padding_bonus=3.0),
                           text)})
    frames = np.stack([f for f in runs[1][0].frames_out if f is not None])[:, 1:]
    delay_steps = META["tts"]["delay_steps"]
    audio = frames[delay_steps:]
    assert (audio[:, 6:] == -1).all() and (audio[:, :6] >= 0).all()
    # The first audio frame is made before any missing codebook is fed back to the model:
    # its first 6 codebooks are the full run's.
    full = np.stack([f for f in runs[0][0].frames_out if f is not None])[:, 1:]
    np.testing.assert_array_equal(audio[0, :6], full[delay_steps, :6])
    # A PAD bonus delays every new word: the script takes longer.
    assert runs[2][0].machine.end_step > runs[0][0].machine.end_step
    model = tts_model()
    with pytest.raises(ValueError, match="num_codebooks"):
        check_request(model, TTSRequest(voices=(voice,), num_codebooks=17), voice.shape[-1])
    with pytest.raises(ValueError, match="shape"):
        check_request(model, TTSRequest(voices=(voice[..., :5],)), voice.shape[-1])
