"""One loaded Moshi-architecture LM serving dialogue, ASR (text delayed behind the audio) and
TTS (audio delayed behind the text) sessions in one batch, each equal to itself run alone."""

import numpy as np
import pytest
import torch

from services.asr.delayed_text import DelayedTextASR
from services.builtin import BuiltinTokenizer
from services.moshi_lm.config import preset
from services.moshi_lm.generate import LMGenerator, SamplingSettings
from services.moshi_lm.loader import prepare_for_inference
from services.moshi_lm.model import LMModel
from services.moshi_lm.stepper import LMStepper, LMStream
from services.tts.delayed_audio import DelayedAudioTTS

STEPS = 30


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return LMGenerator(prepare_for_inference(LMModel(preset("tiny"))))


def sessions(cfg):
    rng = np.random.default_rng(0)
    silence = np.zeros(cfg.num_input_codebooks, np.int64)
    dialogue = [rng.integers(0, cfg.card, cfg.num_input_codebooks) for _ in range(STEPS)]
    asr = DelayedTextASR(cfg, text_delay_frames=3, silence=silence)
    heard = rng.integers(0, cfg.card, (STEPS - 1, cfg.dep_q))
    tts = DelayedAudioTTS(cfg, audio_delay_frames=4, silence=silence)
    text = tts.text_tokens(["Hello there, general Kenobi."], BuiltinTokenizer())
    return {
        "dialogue": (LMStream(SamplingSettings(seed=1)), dialogue, 0),
        "asr": (asr.stream(SamplingSettings(seed=2)), asr.inputs(heard), 3),
        "tts": (tts.stream(SamplingSettings(seed=3)), tts.inputs(text), 5),
    }, heard, text


def run(generator, runs):
    """runs: name -> (stream, inputs, first tick); all in one stepper, slot per session."""
    stepper = LMStepper(generator, len(runs), max_delay=8)
    slots = {name: i for i, name in enumerate(runs)}
    outputs = {name: [] for name in runs}
    ticks = max(start + len(inputs) for _, inputs, start in runs.values())
    for tick in range(ticks):
        joining = [n for n, (_, _, start) in runs.items() if start == tick]
        if joining:
            stepper.start([slots[n] for n in joining], [runs[n][0] for n in joining])
        live = [n for n, (_, inputs, start) in runs.items()
                if start <= tick < start + len(inputs)]
        frames = stepper.step([slots[n] for n in live],
                              [runs[n][1][tick - runs[n][2]] for n in live])
        for name, frame in zip(live, frames, strict=True):
            outputs[name].append(frame)
    return outputs


def as_arrays(frames):
    return [None if f is None else (f.text_token, f.audio.tolist()) for f in frames]


def test_three_modes_in_one_batch_equal_each_alone(generator):
    runs, heard, text = sessions(generator.cfg)
    together = run(generator, runs)
    for name, (stream, inputs, _) in runs.items():
        alone = run(generator, {name: (stream, inputs, 0)})[name]
        assert as_arrays(together[name]) == as_arrays(alone), name
    # ASR: the de-delayed frame i carries input frame i's audio (forced) and its text.
    asr = [f for f in together["asr"] if f is not None]
    assert len(asr) == len(heard) + 1 - 3
    np.testing.assert_array_equal(np.stack([f.audio for f in asr]), heard[:len(asr)])
    # TTS: the de-delayed text is the forced script, one step later in the grid.
    tts = [f for f in together["tts"] if f is not None]
    assert [f.text_token for f in tts] == text[1:1 + len(tts)]
    assert 0 in text and all(t >= 0 for t in text)
