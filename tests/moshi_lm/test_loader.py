"""Loading: exact key layout (docs/architecture.md#lm-checkpoint) on small random
checkpoints, Moshi and STT (dep_q = 0) layouts, dtypes, clear errors, the int8 path and the
tokenizer."""

import json

import pytest
import torch
from safetensors.torch import save_file

from services.core.checkpoint import CheckpointError
from services.moshi_lm.config import PRESETS, LMConfig
from services.moshi_lm.generate import LMGenerator, SamplingSettings
from services.moshi_lm.loader import load_config, load_lm
from services.moshi_lm.model import LMModel
from services.moshi_lm.tokenizer import TextTokenizer
from tests.conftest import FIXTURES
from tests.moshi_lm.conftest import fixture_config, load_fixture, tiny_config

STT = dict(n_q=8, dep_q=0, delays=(0,) * 9, extra_heads_num_heads=2, extra_heads_dim=6)


def expected_keys(cfg: LMConfig) -> dict[str, tuple[int, ...]]:
    """Key names and shapes as the spec lays them out, written independently of the model."""
    d, dd, hidden = cfg.dim, cfg.depformer_dim, 2 * int(cfg.hidden_scale * cfg.dim) // 3
    keys = {"text_emb.weight": (cfg.text_card + 1, d), "out_norm.alpha": (1, 1, d),
            "text_linear.weight": (cfg.text_card, d)}
    keys |= {f"emb.{k}.weight": (cfg.card + 1, d) for k in range(cfg.n_q)}
    keys |= {f"extra_heads.{i}.weight": (cfg.extra_heads_dim, d)
             for i in range(cfg.extra_heads_num_heads)}
    for layer in range(cfg.num_layers):
        p = f"transformer.layers.{layer}."
        keys |= {p + "self_attn.in_proj_weight": (3 * d, d), p + "self_attn.out_proj.weight":
                 (d, d), p + "norm1.alpha": (1, 1, d), p + "norm2.alpha": (1, 1, d),
                 p + "gating.linear_in.weight": (2 * hidden, d),
                 p + "gating.linear_out.weight": (d, hidden)}
    if cfg.dep_q:
        q, dhidden = cfg.dep_q, 2 * cfg.depformer_dim_feedforward // 3
        keys |= {f"depformer_in.{k}.weight": (dd, d) for k in range(q)}
        keys |= {"depformer_text_emb.weight": (cfg.text_card + 1, dd)}
        keys |= {f"depformer_emb.{k}.weight": (cfg.card + 1, dd) for k in range(q - 1)}
        keys |= {f"linears.{k}.weight": (cfg.card, dd) for k in range(q)}
        for layer in range(cfg.depformer_num_layers):
            p = f"depformer.layers.{layer}."
            keys |= {p + "self_attn.in_proj_weight": (q * 3 * dd, dd),
                     p + "self_attn.out_proj.weight": (q * dd, dd),
                     p + "norm1.alpha": (1, 1, dd), p + "norm2.alpha": (1, 1, dd)}
            for k in range(q):
                keys |= {p + f"gating.{k}.linear_in.weight": (2 * dhidden, dd),
                         p + f"gating.{k}.linear_out.weight": (dd, dhidden)}
    return keys


def random_checkpoint(folder, cfg: LMConfig, dtype=torch.float32, seed=0) -> dict:
    """A random checkpoint folder as Kyutai ships them: config.json + model.safetensors."""
    g = torch.Generator().manual_seed(seed)
    tensors = {k: (torch.randn(shape, generator=g) * 0.2).to(dtype)
               for k, shape in expected_keys(cfg).items()}
    folder.mkdir(exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    config = {f: getattr(cfg, f) for f in ("dim", "num_heads", "num_layers", "hidden_scale",
                                            "context", "text_card", "card", "n_q", "dep_q",
                                            "depformer_dim", "depformer_num_heads",
                                            "depformer_num_layers", "depformer_dim_feedforward",
                                            "extra_heads_num_heads", "extra_heads_dim")}
    config |= {"delays": list(cfg.delays), "depformer_causal": True, "model_type": "stt",
               "lm_gen_config": {"temp": 0.5, "top_k": 9}}
    (folder / "config.json").write_text(json.dumps(config))
    return tensors


@pytest.mark.parametrize("overrides", [{}, STT], ids=["moshi", "stt_dep_q_0"])
def test_random_checkpoint_loads_key_for_key(tmp_path, overrides):
    cfg = tiny_config(**overrides)
    tensors = random_checkpoint(tmp_path / "ckpt", cfg)
    model = load_lm(tmp_path / "ckpt")
    assert model.cfg.lm_gen_config == {"temp": 0.5, "top_k": 9}
    state = model.state_dict()
    assert set(state) == set(tensors)
    for key, tensor in tensors.items():
        assert torch.equal(state[key], tensor), key
    # Runs, and without a depformer returns text only.
    generator = LMGenerator(model)
    gen_state = generator.init_state(2, SamplingSettings.greedy())
    result = generator.step(gen_state, torch.zeros(2, cfg.num_input_codebooks, dtype=torch.long))
    assert result.audio.shape == (2, cfg.dep_q)
    assert result.valid.tolist() == [cfg.max_delay == 0] * 2


def test_golden_layouts_are_the_spec_layout():
    for name in ("lm_dev", "lm_dev_stt", "lm_dev_stt_vad"):
        model = LMModel(fixture_config(name))
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert shapes == expected_keys(fixture_config(name)), name


def test_stored_bf16_runs_in_float32_and_back():
    model = load_fixture("lm_dev_bf16", torch.float32)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    model = load_fixture("lm_dev", torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_a_local_checkpoint_without_config_is_an_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    for checkpoint in (tmp_path, tmp_path / "model.safetensors"):
        with pytest.raises(CheckpointError, match=r"has no config\.json"):
            load_config(checkpoint)


def test_only_the_known_repositories_without_config_are_moshi_7b(monkeypatch, caplog):
    from services.moshi_lm import loader

    monkeypatch.setattr(loader, "resolve_file", lambda *a, **k: pytest.fail("no download"))
    assert load_config(hf_repo="kyutai/moshiko-pytorch-bf16") == PRESETS["moshi_7b"]
    assert "kyutai/moshiko-pytorch-bf16 ships no config.json: using the Moshi 7B preset" \
        in caplog.text
    assert PRESETS["moshi_7b"].transformer.dim_feedforward == 16896


def test_wrong_checkpoints_give_clear_errors(tmp_path):
    cfg = tiny_config()
    tensors = random_checkpoint(tmp_path / "ok", cfg)
    del tensors["linears.2.weight"]
    tensors["out_norm.alpha"] = torch.zeros(1, 1, 7)
    tensors["surprise.weight"] = torch.zeros(1)
    save_file(tensors, str(tmp_path / "ok" / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        load_lm(tmp_path / "ok")
    message = str(error.value)
    assert "linears.2.weight" in message and "surprise.weight" in message
    assert "out_norm.alpha" in message
    (tmp_path / "ok" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_lm(tmp_path / "ok")
    with pytest.raises(FileNotFoundError):
        load_lm(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="delays"):
        LMConfig.from_dict({"n_q": 4, "dep_q": 2, "delays": [0, 0]})
    with pytest.raises(ValueError, match="quantize"):
        load_lm(tmp_path / "ok", quantize="int4")


def test_int8_weights_stay_close_to_float(tmp_path):
    from services.core import kernels
    from services.moshi_lm.quantize import BlockedInt8Weight, DynamicInt8Weight, Int8Weight

    cfg = tiny_config(dim=64, context=16)
    random_checkpoint(tmp_path / "ckpt", cfg)
    outputs = {}
    weight_only = BlockedInt8Weight if kernels.available() else Int8Weight
    for quantize, kind in ((None, None), ("int8", DynamicInt8Weight),
                           ("int8-weight", weight_only)):
        model = load_lm(tmp_path / "ckpt", quantize=quantize)
        if kind is not None:  # every temporal weight and the text head
            assert sum(isinstance(b, kind) for b in model.buffers()) == 4 * cfg.num_layers + 1
        generator = LMGenerator(model)
        state = generator.init_state(1, SamplingSettings.greedy())
        codes = torch.arange(cfg.num_input_codebooks)[None]
        outputs[quantize] = torch.stack([generator.step(state, codes, return_logits=True)
                                         .text_logits[0] for _ in range(6)])
    scale = outputs[None].abs().max()
    for quantize in ("int8", "int8-weight"):
        assert (outputs[quantize] - outputs[None]).abs().max() / scale < 0.05, quantize


def test_extra_heads_read_the_output_after_out_norm():
    """STT semantic-VAD heads: softmax of each head on the temporal transformer output after
    out_norm (the vector the text head reads); the golden parity is in test_parity.py."""
    model = load_fixture("lm_dev_stt_vad")
    generator = LMGenerator(model)
    state = generator.init_state(1, SamplingSettings.greedy())
    user = torch.randint(0, 64, (12, 32), generator=torch.Generator().manual_seed(3))
    probs, inputs, previous = [], [], model.cfg.text_card
    initial_audio = torch.full((32,), model.cfg.card)
    for t in range(12):
        result = generator.step(state, user[t][None])
        probs.append(result.extra_probs[0])
        # All delays are 0: step t sees the text chosen at t - 1 and the audio given at t.
        inputs.append(torch.cat([torch.tensor([previous]), initial_audio if t == 0 else user[t]]))
        previous = result.text.item()
    with torch.no_grad():
        raw = model.out_norm(model.transformer(model.embed(torch.stack(inputs)[None])))[0]
    expected = torch.stack([torch.softmax(h(raw), dim=-1) for h in model.extra_heads], dim=1)
    probs = torch.stack(probs)
    assert probs.shape == (12, 4, 6)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)


def test_tokenizer_display_convention():
    tokenizer = TextTokenizer(FIXTURES / "tts_dev_tokenizer.model")
    ids = tokenizer.encode("hello world")
    assert tokenizer.display(ids) == " hello world"
    assert tokenizer.piece(3) == "" and tokenizer.piece(0) == ""  # PAD, EPAD
    assert tokenizer.piece(-1) == "" and tokenizer.piece(tokenizer.vocab_size) == ""
    with pytest.raises(CheckpointError, match="text_card"):
        TextTokenizer.for_checkpoint(
            LMConfig(text_card=100, tokenizer_name="tts_dev_tokenizer.model"), FIXTURES)


def test_packed_bf16_weights_are_bit_identical():
    """Packed where oneDNN packs bf16 on this CPU (AVX-512), plain weights elsewhere (AVX2):
    the same results either way."""
    from services.moshi_lm.loader import prepare_for_inference
    from services.moshi_lm.quantize import PackedWeight, _cpu_packs_bf16

    outputs, packed = [], []
    for pack in (False, True):
        model = prepare_for_inference(load_fixture("lm_dev", torch.float32).to(torch.bfloat16),
                                      pack=pack)
        packed.append(sum(isinstance(b, PackedWeight) for b in model.buffers()))
        generator = LMGenerator(model)
        state = generator.init_state(2, SamplingSettings(seed=4))
        codes = torch.arange(16).view(2, 8) * 3
        outputs.append([generator.step(state, codes, return_logits=True) for _ in range(5)])
    assert packed[0] == 0 and (packed[1] > 0) == _cpu_packs_bf16()
    for a, b in zip(*outputs, strict=True):
        assert torch.equal(a.text_logits, b.text_logits) and torch.equal(a.frame, b.frame)


def test_hugging_face_repositories_resolve_through_the_hub(tmp_path, monkeypatch):
    """--hf-repo: config.json and the weights named by it come from the hub (stubbed here);
    another repository without config.json is not a Moshi-family LM."""
    from services.core.checkpoint import HubFileMissing
    from services.moshi_lm import loader

    cfg = tiny_config(**STT)
    random_checkpoint(tmp_path / "repo", cfg)
    (tmp_path / "repo" / "model.safetensors").rename(tmp_path / "repo" / "weights.safetensors")
    config = json.loads((tmp_path / "repo" / "config.json").read_text())
    (tmp_path / "repo" / "config.json").write_text(
        json.dumps(config | {"moshi_name": "weights.safetensors"}))
    asked = []

    def fake_hub(filename, checkpoint=None, hf_repo=None):
        asked.append((hf_repo, filename))
        if hf_repo == "kyutai/legacy":
            raise HubFileMissing(f"{hf_repo} has no file {filename}")
        return tmp_path / "repo" / filename

    monkeypatch.setattr(loader, "resolve_file", fake_hub)
    model = load_lm(hf_repo="kyutai/stt-like")
    assert asked == [("kyutai/stt-like", "config.json"), ("kyutai/stt-like", "weights.safetensors")]
    assert model.cfg.n_q == cfg.n_q and model.cfg.dep_q == 0
    with pytest.raises(CheckpointError, match=r"kyutai/legacy has no config\.json: not a Moshi"):
        load_config(hf_repo="kyutai/legacy")
