"""``moshi-services lm generate`` end to end, through click's CliRunner."""


import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from cli.main import main
from services.mimi.codes_file import load_codes, save_codes
from tests.conftest import golden_checkpoint, load_golden


def write_user_codes(path, codes: torch.Tensor) -> str:
    save_codes(path, codes, num_samples=codes.shape[1] * 1920, model="test-mimi")
    return str(path)


def run(*args: str):
    result = CliRunner().invoke(main, ["lm", "generate", *args])
    return result


def read_output(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def test_greedy_generation_matches_the_reference_run(tmp_path):
    golden = load_golden("lm_dev_greedy")
    user = write_user_codes(tmp_path / "user.safetensors", golden["user_codes"])
    out = tmp_path / "reply.safetensors"
    result = run("--checkpoint", golden_checkpoint(tmp_path, "lm_dev"), "--user-codes", user,
                 "-o", str(out), "--greedy")
    assert result.exit_code == 0, result.output
    expected = golden["step_out"][1:]  # the first call returns nothing
    tensors = read_output(out)
    assert tensors["text"].tolist() == expected[:, 0].tolist()
    codes = load_codes(out)  # a codes file `mimi decode` reads
    assert codes.codes.tolist() == expected[:, 1:].T.tolist()
    assert codes.num_samples == 59 * 1920


def test_stt_layout_writes_text_only(tmp_path):
    golden = load_golden("lm_dev_stt_greedy")
    user = write_user_codes(tmp_path / "user.safetensors", golden["user_codes"])
    out = tmp_path / "text.safetensors"
    result = run("--checkpoint", golden_checkpoint(tmp_path, "lm_dev_stt"), "--user-codes", user,
                 "-o", str(out), "--greedy", "--steps", "25")
    assert result.exit_code == 0, result.output
    tensors = read_output(out)
    assert set(tensors) == {"text"}
    assert tensors["text"].tolist() == golden["text_sampled"][:25].tolist()


def test_builtin_model_sampling_is_seeded(tmp_path):
    codes = torch.randint(0, 2048, (8, 12), generator=torch.Generator().manual_seed(0))
    user = write_user_codes(tmp_path / "user.safetensors", codes)
    outputs = []
    for seed, name in ((5, "a"), (5, "b"), (6, "c")):
        out = tmp_path / f"{name}.safetensors"
        result = run("--user-codes", user, "-o", str(out), "--seed", str(seed),
                     "--temperature", "1.0", "--top-k", "50", "--text-temperature", "1.0",
                     "--text-top-k", "0")
        assert result.exit_code == 0, result.output
        assert "built-in tiny random Moshi LM" in result.stderr
        outputs.append(read_output(out))
    assert outputs[0]["codes"].shape == (8, 11)
    assert torch.equal(outputs[0]["codes"], outputs[1]["codes"])
    assert not torch.equal(outputs[0]["codes"], outputs[2]["codes"])


@pytest.mark.parametrize(("codes", "extra", "message"), [
    (torch.zeros(4, 5, dtype=torch.long), [], "has 4 codebooks"),
    (torch.zeros(8, 5, dtype=torch.long), ["--steps", "9"], "only 5 user frames"),
    (torch.zeros(8, 5, dtype=torch.long), ["--greedy", "--seed", "1"], "exclude each other"),
])
def test_bad_input_is_refused_clearly(tmp_path, codes, extra, message):
    user = write_user_codes(tmp_path / "user.safetensors", codes)
    result = run("--user-codes", user, "-o", str(tmp_path / "o.safetensors"), *extra)
    assert result.exit_code != 0
    assert message in result.output + result.stderr


def test_not_a_codes_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nonsense")
    result = run("--user-codes", str(bad), "-o", str(tmp_path / "o.safetensors"))
    assert result.exit_code != 0 and "cannot read codes file" in result.output + result.stderr


def test_reply_decodes_with_mimi(tmp_path):
    """The offline reply path: user codes -> lm generate -> mimi decode -> wav."""
    import soundfile

    codes = torch.randint(0, 2048, (8, 6), generator=torch.Generator().manual_seed(1))
    user = write_user_codes(tmp_path / "user.safetensors", codes)
    reply = tmp_path / "reply.safetensors"
    assert run("--user-codes", user, "-o", str(reply), "--greedy").exit_code == 0
    wav = tmp_path / "reply.wav"
    result = CliRunner().invoke(main, ["mimi", "decode", str(reply), str(wav)])
    assert result.exit_code == 0, result.output
    assert soundfile.info(str(wav)).frames == 5 * 1920
