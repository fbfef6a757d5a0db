import pytest
import torch

from services.core.constants import ZERO_TOKEN
from services.moshi_lm.model import LMModel, LowRankEmbedding
from tests.moshi_lm.conftest import tiny_config, tiny_model


@pytest.mark.parametrize("schedule", [(0, 1, 1), (1, 0, 2)])
def test_scheduled_depformer_inputs_use_the_codebooks_projection(schedule):
    model = tiny_model(depformer_weights_per_step_schedule=schedule)
    assert len(model.depformer_in) == max(schedule) + 1
    assert model.depformer.cfg.weights_per_step == max(schedule) + 1
    hidden = torch.randn(2, 5, 32)
    expected = torch.stack([model.depformer_in[i](hidden) for i in schedule], dim=-2)
    torch.testing.assert_close(model.depformer_inputs(hidden), expected)


def test_low_rank_depformer_embeddings():
    model = tiny_model(depformer_low_rank_embeddings=4)
    tables = [model.depformer_text_emb, *model.depformer_emb]
    assert all(isinstance(t, LowRankEmbedding) for t in tables)
    assert model.depformer_emb[0].weight.shape == (17, 4)
    assert model.depformer_emb[0].low_rank.weight.shape == (16, 4)
    ids = torch.tensor([ZERO_TOKEN, 3])
    out = model.depformer_emb[0](ids)
    assert torch.equal(out[0], torch.zeros(16))
    emb = model.depformer_emb[0]
    torch.testing.assert_close(out[1], emb.low_rank(emb.weight[3]))


def test_lm_refuses_configs_needing_the_tts_model():
    with pytest.raises(ValueError, match="cross_attention"):
        LMModel(tiny_config(extra={"cross_attention": True}))
