"""The one seed policy and the sampling checks every service shares."""

import pytest

from services.core.common_pb2 import SamplingParams
from services.core.engine import InvalidInput
from services.core.validation import DEFAULT_SEED, MAX_SEED, resolve_seed, sampling_params
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
