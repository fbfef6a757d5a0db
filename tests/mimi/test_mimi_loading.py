"""Configs, presets and strict loading (local file, folder, Hugging Face names)."""

import json

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import EntryNotFoundError
from safetensors.torch import load_file, save_file

from services.core.checkpoint import CheckpointError, build_on_meta, save_state_dict
from services.mimi import CHECKPOINT_NAMES, MimiConfig, MimiModel, build_random_mimi, get_preset
from services.mimi.loading import find_checkpoint, load_mimi
from tests.conftest import FIXTURES

DEV = FIXTURES / "mimi_dev.safetensors"


def test_config_from_the_golden_json():
    cfg = MimiConfig.from_dict(json.loads((FIXTURES / "mimi_dev.json").read_text()))
    assert cfg.seanet.n_filters == 8 and cfg.seanet.ratios == (8, 6, 5, 4)
    assert cfg.transformer.context == 20 and cfg.transformer.d_model == 64
    assert cfg.transformer.layer_scale == 0.01 and cfg.transformer.norm == "layer_norm"
    assert cfg.quantizer.n_q == 16 and cfg.quantizer.bins == 256
    assert (cfg.frame_size, cfg.encoder_frame_rate, cfg.downsample_stride) == (1920, 25.0, 2)


def test_presets_by_exact_name():
    cfg = get_preset("mimi_202407")
    assert (cfg.dimension, cfg.max_codebooks, cfg.cardinality) == (512, 32, 2048)
    assert cfg.transformer.context == 250 and cfg.transformer.num_layers == 8
    assert get_preset("tiny").frame_size == 1920
    with pytest.raises(ValueError, match="unknown Mimi preset"):
        get_preset("mimi")


def test_unsupported_config_is_refused():
    d = json.loads((FIXTURES / "mimi_dev.json").read_text())["config"]
    d["seanet"]["causal"] = False
    with pytest.raises(ValueError, match="causal"):
        MimiConfig.from_dict(d)


def test_published_config_saves_and_loads_strict(tmp_path):
    """Kyutai's full config with random weights: 318 tensors, ≈96.2 M elements, through the
    same loader and file name as the real checkpoint."""
    model = build_on_meta(lambda: MimiModel(get_preset("mimi_202407"))).to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.uniform_(0.5, 1.0, generator=gen)
    state = model.state_dict()
    assert len(state) == 318
    assert sum(t.numel() for t in state.values()) == pytest.approx(96.2e6, rel=1e-3)
    shapes = {
        "encoder.model.12.conv.conv.weight": (1024, 512, 16),
        "decoder.model.2.convtr.convtr.weight": (1024, 512, 16),
        "downsample.conv.conv.conv.weight": (512, 512, 4),
        "upsample.convtr.convtr.convtr.weight": (512, 1, 4),
        "encoder_transformer.transformer.layers.7.self_attn.in_proj_weight": (1536, 512),
        "quantizer.rvq_rest.vq.layers.30._codebook.embedding_sum": (2048, 256),
        "quantizer.rvq_first.input_proj.weight": (256, 512, 1),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape
    save_state_dict(model, tmp_path / CHECKPOINT_NAMES[0])
    loaded = load_mimi(tmp_path)
    assert loaded.cfg == get_preset("mimi_202407") and loaded.name == CHECKPOINT_NAMES[0]
    for key in shapes:
        assert torch.equal(loaded.state_dict()[key], state[key])


def test_golden_checkpoint_loads_key_for_key():
    model = load_mimi(DEV)
    assert set(model.state_dict()) == set(load_file(DEV))
    assert model.num_codebooks == 8 and model.name == "mimi_dev.safetensors"


def test_wrong_checkpoint_names_every_bad_key(tmp_path):
    with pytest.raises(CheckpointError, match="mis-shaped keys") as err:
        load_mimi(DEV, config="tiny")  # 32 codebooks of 2048 entries, the file 16 of 256
    assert "48 missing keys: quantizer.rvq_rest.vq.layers.15._codebook" in str(err.value)
    state = load_file(DEV)
    del state["downsample.conv.conv.conv.weight"]
    state["quantizer.extra"] = torch.zeros(1)
    path = tmp_path / "broken.safetensors"
    save_file(state, path)
    (tmp_path / "broken.json").write_text((FIXTURES / "mimi_dev.json").read_text())
    with pytest.raises(CheckpointError) as err:
        load_mimi(path)
    message = str(err.value)
    assert "1 missing keys: downsample.conv.conv.conv.weight" in message
    assert "1 unexpected keys: quantizer.extra" in message


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "mimi_dev.safetensors"
    path.write_bytes(DEV.read_bytes()[: DEV.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        load_mimi(path, config="mimi_202407")


def test_folder_with_the_dsm_name(tmp_path):
    (tmp_path / CHECKPOINT_NAMES[1]).write_bytes(DEV.read_bytes())
    assert find_checkpoint(tmp_path) == tmp_path / CHECKPOINT_NAMES[1]
    with pytest.raises(FileNotFoundError, match=CHECKPOINT_NAMES[0]):
        find_checkpoint(tmp_path / "empty_dir_that_is_not_there")


def test_hub_repo_tries_both_file_names(monkeypatch, tmp_path):
    asked = []

    def fake_download(repo, filename, **kwargs):
        asked.append(filename)
        if filename != CHECKPOINT_NAMES[1]:
            raise EntryNotFoundError(f"{filename} not in {repo}")
        return str(DEV)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert find_checkpoint(hf_repo="kyutai/stt-1b-en_fr") == DEV
    assert asked == list(CHECKPOINT_NAMES)


def test_random_model_is_deterministic():
    a, b = build_random_mimi(seed=3), build_random_mimi(seed=3)
    c = build_random_mimi(seed=4)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.state_dict()["encoder.model.0.conv.conv.weight"],
                           c.state_dict()["encoder.model.0.conv.conv.weight"])
    assert a.cfg == get_preset("tiny") and a.num_codebooks == 8
