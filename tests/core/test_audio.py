import numpy as np
import pytest
import soundfile

from services.core.audio import StreamResampler, read_audio, resample, to_mono, write_wav


def _tone(rate: int, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_read_audio_resamples_and_mixes(tmp_path):
    stereo = np.stack([_tone(16_000), _tone(16_000)], axis=1)
    soundfile.write(tmp_path / "a.flac", stereo, 16_000)
    audio, rate = read_audio(tmp_path / "a.flac")
    assert rate == 16_000
    assert audio.dtype == np.float32
    assert abs(len(audio) - 24_000) <= 1
    # the 440 Hz tone survives resampling
    expected = _tone(24_000)[1000:20_000]
    assert np.abs(audio[1000:20_000] - expected).max() < 0.02


def test_stream_resampler_matches_total_length():
    audio = _tone(48_000, 2.0)
    stream = StreamResampler(48_000)
    pieces = [stream.process(c) for c in np.array_split(audio, 37)] + [stream.flush()]
    out = np.concatenate(pieces)
    assert abs(len(out) - 48_000) <= 2
    assert np.abs(out[2000:40_000] - resample(audio, 48_000)[2000:40_000]).max() < 1e-3


def test_bad_rates_and_identity():
    with pytest.raises(ValueError):
        resample(np.zeros(10), 0)
    with pytest.raises(ValueError):
        StreamResampler(-1)
    x = np.arange(5, dtype=np.float32)
    assert np.array_equal(StreamResampler(24_000).process(x), x)
    assert to_mono(np.ones((4, 2))).shape == (4,)


def test_write_wav_is_24k_pcm16(tmp_path):
    write_wav(tmp_path / "o.wav", _tone(24_000, 0.1))
    info = soundfile.info(str(tmp_path / "o.wav"))
    assert info.samplerate == 24_000 and info.subtype == "PCM_16"
