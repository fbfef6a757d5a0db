"""services.wiring: the one place that builds the services from options."""

from click.testing import CliRunner

from cli.main import main
from services.builtin import BUILTIN_LM_NAME
from services.moshi_lm.quantize import QUANTIZE_MODES
from services.wiring import (
    RIVA_SERVICE_NAMES,
    SERVICE_NAMES,
    ModelOptions,
    build_services,
    close_all,
    service_named,
)


def test_default_services_share_one_lm_and_carry_their_proto_names():
    services = build_services(None, ModelOptions(max_sessions=1, asr_text_delay=2,
                                                 tts_audio_delay=2))
    try:
        assert [s.name for s in services] == [*SERVICE_NAMES.values(),
                                              *RIVA_SERVICE_NAMES.values()]
        lm = service_named(services, "lm")
        assert lm.model_name == BUILTIN_LM_NAME
        assert service_named(services, "asr").engine is lm.engine
    finally:
        close_all(services)


def test_kv_dtype_sizes_the_engines_lm_ring(tmp_path):
    """--kv-dtype bfloat16 beside float32 compute: the one engine's ring is bf16, and the
    in-process ASR command runs on it end to end."""
    import numpy as np
    import soundfile as sf
    import torch

    services = build_services(["lm", "asr"], ModelOptions(max_sessions=1, asr_text_delay=2,
                                                          kv_dtype="bfloat16"))
    try:
        stepper = service_named(services, "lm").engine.stepper
        assert stepper.state.transformer.keys.dtype == torch.bfloat16
        assert stepper.lm.dtype == torch.float32
    finally:
        close_all(services)
    wav = tmp_path / "in.wav"
    sf.write(wav, 0.1 * np.sin(np.arange(24000) / 10), 24000)
    result = CliRunner().invoke(main, ["asr", str(wav), "--kv-dtype", "bfloat16"])
    assert result.exit_code == 0, result.output


def test_the_cli_offers_the_quantize_modes_of_the_lm():
    import cli.options

    assert cli.options.QUANTIZE_MODES == QUANTIZE_MODES


def test_the_in_process_tts_is_the_one_serve_runs(tmp_path):
    """Without a checkpoint `tts` builds its service as `serve` does (same LM, same name)."""
    result = CliRunner().invoke(main, ["tts", "Hi.", "-o", str(tmp_path / "a.wav")])
    assert result.exit_code == 0, result.output
    assert "built-in tiny random Moshi LM" in result.stderr


def test_a_cpu_server_leaves_a_core_to_grpc(monkeypatch):
    import torch

    from services.wiring import serving_threads

    for torch_choice, expected in ((8, 7), (2, 1), (1, 1)):
        monkeypatch.setattr(torch, "get_num_threads", lambda n=torch_choice: n)
        assert serving_threads("cpu") == expected
    assert serving_threads("cuda") is None
    assert serving_threads("cuda:1") is None


def test_bf16_on_a_cpu_without_bf16_arithmetic_is_warned_about(monkeypatch):
    from services.core import kernels
    from services.wiring import dtype_warning

    monkeypatch.setattr(kernels, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    warning = dtype_warning("cpu", "bfloat16")
    assert warning.startswith("warning: --dtype bfloat16") and "\n" not in warning
    assert dtype_warning("cpu", "float32") is None
    assert dtype_warning("cuda", "bfloat16") is None
    monkeypatch.setattr(kernels, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert dtype_warning("cpu", "bfloat16") is None


def test_serve_prints_the_dtype_warning(monkeypatch):
    import cli.serve

    monkeypatch.setattr(cli.serve, "dtype_warning", lambda device, dtype: f"warning: {dtype}")
    # A port already taken stops serve right after the warning, before any model loads.
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--port", str(port), "--dtype", "bfloat16"])
    assert "warning: bfloat16" in result.output, result.output
