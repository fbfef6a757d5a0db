"""The one seed policy and the field checks every service shares."""

import numpy as np
import pytest

from services.core.common_pb2 import SamplingParams
from services.core.engine import InvalidInput
from services.core.validation import (
    DEFAULT_SEED,
    MAX_SAMPLE_MAGNITUDE,
    MAX_SEED,
    check_range,
    check_samples,
    check_text,
    resolve_seed,
    sampling_params,
)
from services.dialogue import dialogue_pb2
from services.moshi_lm import moshi_lm_pb2
from services.tts import tts_pb2


@pytest.mark.parametrize("config", [dialogue_pb2.DialogueConfig, moshi_lm_pb2.GenerateConfig,
                                    tts_pb2.SynthesisConfig])
def test_an_unset_seed_is_the_default_seed_everywhere(config):
    assert DEFAULT_SEED == 0
    assert resolve_seed(config()) == 0
    assert resolve_seed(config(seed=5)) == 5
    assert resolve_seed(config(seed=MAX_SEED)) == MAX_SEED
    with pytest.raises(InvalidInput, match="seed must be below 2\\*\\*63"):
        resolve_seed(config(seed=MAX_SEED + 1))


def test_sampling_params_defaults_and_ranges():
    assert sampling_params(SamplingParams(), 0.7, 25, 100, "text") == (0.7, 25)
    assert sampling_params(SamplingParams(temperature=0, top_k=0), 0.7, 25, 100, "text") \
        == (0.0, 0)
    with pytest.raises(InvalidInput, match=r"text top_k must be in 0\.\.100"):
        sampling_params(SamplingParams(top_k=101), 0.7, 25, 100, "text")
    with pytest.raises(InvalidInput, match="audio temperature"):
        sampling_params(SamplingParams(temperature=float("nan")), 0.7, 25, 100, "audio")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5, 10.5])
def test_check_range_refuses_nan_infinities_and_out_of_range(value):
    with pytest.raises(InvalidInput, match=r"cfg_coef must be in \[0, 10\]"):
        check_range("cfg_coef", value, 0, 10)


def test_check_range_passes_the_bounds():
    assert check_range("speed_bias", -10, -10, 10) == -10.0
    assert check_range("speed_bias", 10, -10, 10) == 10.0


def test_check_samples_allows_overshoot_but_not_what_is_not_audio():
    overshoot = np.array([-MAX_SAMPLE_MAGNITUDE, 1.5, MAX_SAMPLE_MAGNITUDE], np.float32)
    np.testing.assert_array_equal(check_samples(overshoot), overshoot)
    assert check_samples(np.zeros(0, np.float32)).size == 0
    with pytest.raises(InvalidInput, match="full scale"):
        check_samples(np.array([0, 1e30], np.float32))
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        check_samples(np.array([0, np.nan], np.float32))


@pytest.mark.parametrize("text", ["", " ", "\n\t "])
def test_check_text_refuses_blank_text(text):
    with pytest.raises(InvalidInput, match="the text is empty"):
        check_text(text)
    assert check_text(" a ") == " a "
