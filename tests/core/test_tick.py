"""The tick: every mode on one engine of one LM and codec, each session equal to itself run
alone; STT golden tokens through a recognition session; host copies per tick that do not grow
with the batch."""

from functools import partial

import numpy as np
import pytest
import torch

from services.asr.mode import RecognitionMode, final_words, frames_of_clip
from services.asr.timing import SttTiming
from services.asr.words import WordDecoder
from services.builtin import BuiltinTokenizer
from services.core.engine import run_session
from services.core.tick import speech_engine
from services.dialogue.mode import DialogueMode
from services.mimi.mode import DecodeMode, EncodeMode
from services.moshi_lm.generate import SamplingSettings
from services.moshi_lm.mode import GenerationMode
from services.tts.mode import SynthesisMode
from services.wiring import ModelOptions, load_lm_model, load_mimi_model
from tests.asr.test_asr_service import StandInCodec, decode, load
from tests.conftest import concurrently, load_golden, run_alone

TEXT = "Hello there, general Kenobi."


@pytest.fixture(scope="module")
def models():
    """The built-in tiny Mimi and Moshi-layout LM (what `serve` runs without a checkpoint)."""
    from services.moshi_lm.generate import LMGenerator

    model, _, _ = load_lm_model(ModelOptions())
    return LMGenerator(model), load_mimi_model(ModelOptions())


def sessions(cfg):
    """name -> (a fresh mode, its inputs): one session of every kind."""
    rng = np.random.default_rng(0)
    tokenizer = BuiltinTokenizer()
    speech = (0.2 * rng.standard_normal((12, 1920))).astype(np.float32)
    asr = RecognitionMode.for_moshi(cfg, 3, tokenizer.decode, SamplingSettings(seed=2))
    return {
        "dialogue": lambda: (DialogueMode(SamplingSettings(seed=1), cfg.num_input_codebooks,
                                          cfg.dep_q), list(speech)),
        "asr": lambda: (RecognitionMode.for_moshi(cfg, 3, tokenizer.decode,
                                                  SamplingSettings(seed=2)),
                        list(frames_of_clip(speech.reshape(-1), asr))),
        "tts": lambda: (SynthesisMode.for_moshi(cfg, tokenizer, 4, SamplingSettings(seed=3)),
                        [TEXT[:9], TEXT[9:]]),
        "lm": lambda: (GenerationMode(SamplingSettings(seed=4)),
                       list(rng.integers(0, cfg.card, (10, cfg.num_input_codebooks)))),
        "encode": lambda: (EncodeMode(8), list(speech[:5])),
        "decode": lambda: (DecodeMode(8), list(rng.integers(0, 2048, (5, 8)))),
    }


def split(outputs):
    """Outputs as (plain values with audio left out, the audio arrays): tokens, codes and
    words must be equal, audio within 1e-5 (the batch width may move a float by an ulp)."""
    audio = []

    def value(x):
        if isinstance(x, np.ndarray):
            if x.dtype.kind == "f":
                audio.append(x)
                return "audio"
            return x.tolist()
        if hasattr(x, "__dataclass_fields__"):
            return tuple(value(getattr(x, f)) for f in x.__dataclass_fields__)
        if isinstance(x, list):
            return [value(v) for v in x]
        return x
    return [value(x) for x in outputs], audio


def assert_equal_outputs(got, expected, name):
    (values, audio), (want_values, want_audio) = split(got), split(expected)
    assert values == want_values, name
    for a, b in zip(audio, want_audio, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=name)


def test_every_mode_in_one_batch_equals_each_alone(models):
    lm, mimi = models
    made = {name: make() for name, make in sessions(lm.cfg).items()}
    engine = speech_engine(6, lm, mimi, max_delay=8)
    try:
        together = concurrently({n: partial(run_session, engine.open(made[n][0]), made[n][1])
                                 for n in made})
        stats = engine.stats()
    finally:
        engine.stop()
    assert stats.frames > stats.steps  # ticks held several sessions
    for name, make in sessions(lm.cfg).items():
        mode, inputs = make()
        alone = run_alone(mode, inputs, lm, mimi, max_delay=8)
        assert_equal_outputs(together[name], alone, name)
        assert any(x is not None for x in alone), name
    assert final_words(together["asr"]) is not None
    tts = [c for c in together["tts"] if c is not None]
    assert [w.text for c in tts for w in c.words] == TEXT.split() and tts[-1].done


def together(lm, mimi, modes, speech):
    """The outputs of recognition sessions of ``modes`` on one engine, at the same time."""
    engine = speech_engine(len(modes), lm, mimi, max_delay=8)
    try:
        return concurrently({k: partial(run_session, engine.open(mode),
                                        list(frames_of_clip(speech, mode)))
                             for k, mode in enumerate(modes)})
    finally:
        engine.stop()


class RecognitionSampledAudio(RecognitionMode):
    """Recognition that claims to use the sampled audio: its ticks run the depformer."""

    @property
    def uses_sampled_audio(self) -> bool:
        return True


def test_recognition_alone_skips_the_depformer_with_the_same_outputs(models, monkeypatch):
    """A tick of recognition sessions on a Moshi LM needs no sampled audio (its own audio
    streams are forced from the input): the depformer is skipped, and every output (words,
    sampled text, tokens) equals that of the same sessions with the depformer run."""
    lm, mimi = models
    depformer_calls = []
    real_depth_step = lm.model.depth_step
    monkeypatch.setattr(lm.model, "depth_step", lambda *a, **k: (depformer_calls.append(1),
                                                                 real_depth_step(*a, **k))[1])
    speech = (0.2 * np.random.default_rng(5).standard_normal(12 * 1920)).astype(np.float32)
    outputs = {}
    for mode_class in (RecognitionMode, RecognitionSampledAudio):
        made = [mode_class.for_moshi(lm.cfg, 3, BuiltinTokenizer().decode,
                                     SamplingSettings(seed=seed)) for seed in (1, 2)]
        outputs[mode_class] = (together(lm, mimi, made, speech), len(depformer_calls))
        depformer_calls.clear()
    (skipped, skipped_calls), (full, full_calls) = outputs.values()
    assert skipped_calls == 0 and full_calls > 0
    for k in range(2):
        assert_equal_outputs(skipped[k], full[k], f"session {k}")
        assert any(x for x in skipped[k])


def test_stt_golden_tokens_through_a_recognition_session():
    """lm_dev_stt through the tick: the golden run feeds code column t at step t and never
    hears column 0, i.e. a clip of columns 1.. with its first frame fed twice."""
    golden = load_golden("lm_dev_stt_greedy")
    columns = golden["user_codes"].numpy()
    codec = StandInCodec(lambda frame: columns[:, round(float(frame[0]) * 1000)])
    model = load("lm_dev_stt")
    timing = SttTiming(0.48)
    pcm = np.zeros((columns.shape[1] - 1, 1920), np.float32)
    pcm[:, 0] = np.arange(1, columns.shape[1]) / 1000
    from services.moshi_lm.generate import LMGenerator

    mode = RecognitionMode.for_stt(model.cfg, timing, decode, SamplingSettings.greedy(),
                                   interim=False)
    events = run_alone(mode, list(pcm), LMGenerator(model), codec)
    expected = WordDecoder(decode, timing)
    for token in golden["text_sampled"].tolist():
        expected.push(token)
    expected.flush()
    assert final_words(events) == expected.words and expected.words
    assert mode.decoder.step == len(golden["text_sampled"])


def test_host_copies_per_tick_do_not_grow_with_the_batch(models, monkeypatch):
    """The tick makes a fixed number of device -> host copies whatever the number of
    sessions: no per-session synchronisation (``.item()``, ``.tolist()``, ``.cpu()``)."""
    lm, mimi = models
    counts = {"n": 0}
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            counts["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)

    def copies_per_tick(n: int) -> float:
        from services.core.tick import SpeechStepper

        stepper = SpeechStepper(n, lm, mimi, max_delay=8)
        made = [sessions(lm.cfg)[kind]() for kind in ("dialogue", "asr", "tts") * n][:n]
        stepper.start(list(range(n)), [mode for mode, _ in made])
        for mode, _ in made:  # the synthesis sessions get their text
            if mode.self_paced:
                mode.absorb(TEXT)
                mode.end_input()
        inputs = [x[0] if not mode.self_paced else None for mode, x in made]
        with torch.inference_mode():
            stepper.step(list(range(n)), inputs)  # the first tick (first frames twice)
            counts["n"] = 0
            for _ in range(3):
                stepper.step(list(range(n)), inputs)
        return counts["n"] / 3

    assert copies_per_tick(12) == copies_per_tick(3)
