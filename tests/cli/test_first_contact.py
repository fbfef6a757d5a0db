"""Issue 13: every command fails cleanly (one `Error:` line, exit 2 for usage, 1 at run time,
no traceback) and early (before any model loads), and says what it is doing."""

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner

import services.wiring
from cli.main import main
from services.mimi.codes_file import save_codes
from tests.conftest import FIXTURES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if any model is loaded (the fail-early items)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the error")

    for name in ("load_mimi_model", "load_lm_model", "build_services"):
        monkeypatch.setattr(services.wiring, name, refuse)
    for module in ("cli.mimi", "cli.lm", "cli.asr", "cli.tts", "cli.dialogue", "cli.serve"):
        for name in ("load_mimi_model", "load_lm_model", "build_services"):
            if hasattr(sys.modules[module], name):
                monkeypatch.setattr(sys.modules[module], name, refuse)


def run(*args, input=None):
    result = CliRunner().invoke(main, [str(a) for a in args], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"traceback: {result.exception!r}"
    return result


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def speech(tmp_path) -> Path:
    path = tmp_path / "in.wav"
    soundfile.write(path, 0.1 * np.random.default_rng(0).standard_normal(12000), 24000)
    return path


@pytest.fixture
def garbage(tmp_path) -> Path:
    path = tmp_path / "noise.wav"
    path.write_bytes(b"this is not audio")
    return path


@pytest.mark.parametrize("command", [["asr"], ["dialogue", "--fast"]])
def test_unreadable_audio_is_one_line_before_any_model(command, garbage, no_model_load,
                                                       tmp_path):
    result = run(*command, garbage, *(["-o", tmp_path / "r.wav"] if "dialogue" in command
                                      else []))
    assert result.exit_code == 1
    assert error_line(result).startswith(f"Error: cannot read audio {garbage}: ")


@pytest.mark.parametrize("args, hint", [
    (["tts", "Hi.", "-o", "{tmp}/missing/out.wav"], "folder {tmp}/missing does not exist"),
    (["tts", "Hi.", "-o", "{tmp}/out.mp3"], "cannot write .mp3 audio; use .wav or .flac"),
    (["dialogue", "{speech}", "-o", "-"], "'-' (standard output) is not supported here"),
    (["dialogue", "{speech}", "-o", "{tmp}/missing/r.wav"], "does not exist"),
    (["mimi", "encode", "{speech}", "{tmp}/missing/c.safetensors"], "does not exist"),
    (["mimi", "decode", "{codes}", "{tmp}/out.mp3"], "cannot write .mp3 audio"),
    (["lm", "generate", "--user-codes", "{codes}", "-o", "{tmp}"], "is a directory"),
])
def test_bad_outputs_are_usage_errors_before_any_model(args, hint, tmp_path, speech,
                                                      no_model_load):
    codes = tmp_path / "c.safetensors"
    save_codes(codes, torch.zeros(8, 2, dtype=torch.long), 3840, "m")
    fill = {"tmp": tmp_path, "speech": speech, "codes": codes}
    result = run(*[a.format(**fill) for a in args])
    assert result.exit_code == 2, result.output
    assert hint.format(**fill) in error_line(result)


def test_cuda_without_cuda_is_a_usage_error(speech):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run("asr", speech, "--device", "cuda")
    assert result.exit_code == 2
    assert "--device cuda: this torch is built without CUDA" in error_line(result) or \
        "--device cuda: no CUDA GPU is visible" in error_line(result)


def test_a_bad_checkpoint_is_one_line(tmp_path, speech):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    for args in (["asr", speech, "--checkpoint", folder],
                 ["dialogue", speech, "--fast", "--lm-checkpoint", folder, "-o",
                  tmp_path / "r.wav"],
                 ["tts", "Hi.", "--checkpoint", folder, "-o", tmp_path / "t.wav"]):
        result = run(*args)
        assert result.exit_code == 1
        assert error_line(result) == f"Error: {folder} has no config.json (Kyutai's layout: " \
            "the config next to the weights)"


@pytest.mark.parametrize("command", [["asr", "{speech}"], ["tts", "Hi.", "-o", "{tmp}/t.wav"],
                                     ["dialogue", "{speech}", "-o", "{tmp}/r.wav"],
                                     ["mimi", "encode", "{speech}", "{tmp}/c.safetensors"]])
def test_an_unreachable_server_is_one_line(command, speech, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [a.format(speech=speech, tmp=tmp_path) for a in command]
    result = run(*args, "--server", f"127.0.0.1:{port}")
    assert result.exit_code == 1
    line = error_line(result)
    assert line.startswith(f"Error: 127.0.0.1:{port}: UNAVAILABLE: ")
    assert line.endswith("(is `moshi-services serve` running there? a TLS server needs --tls)")


def test_out_of_range_codes_in_mimi_decode(tmp_path):
    codes = tmp_path / "c.safetensors"
    save_codes(codes, torch.full((8, 2), 4000, dtype=torch.long), 3840, "random-tiny-seed0")
    result = run("mimi", "decode", codes, tmp_path / "o.wav")
    assert result.exit_code == 1
    assert error_line(result) == (f"Error: {codes} holds codes outside [0, 2048) (the model's "
                                  "codebook size)")


def test_codes_files_need_only_codes(tmp_path):
    from safetensors.torch import save_file

    codes = tmp_path / "bare.safetensors"
    save_file({"codes": torch.zeros(8, 3, dtype=torch.int16)}, codes)
    result = run("mimi", "decode", codes, tmp_path / "o.wav")
    assert result.exit_code == 0, result.output
    assert (f"note: {codes} has no sample_rate, frame_rate, num_codebooks, num_samples, model "
            "metadata: assuming 24000 Hz, 12.5 frames/s, 5760 samples") in result.stderr
    assert "was made by" not in result.stderr
    assert len(soundfile.read(tmp_path / "o.wav")[0]) == 5760


def test_the_readme_pipeline_gives_no_false_warning(tmp_path, speech):
    """encode -> lm generate -> decode with the built-in models: the reply is labelled with
    the codec it is meant for."""
    user, reply = tmp_path / "user.safetensors", tmp_path / "reply.safetensors"
    assert run("mimi", "encode", speech, user).exit_code == 0
    assert run("lm", "generate", "--user-codes", user, "-o", reply).exit_code == 0
    result = run("mimi", "decode", reply, tmp_path / "reply.wav")
    assert result.exit_code == 0 and "was made by" not in result.stderr


def test_outputs_get_the_usual_permissions(tmp_path, speech):
    old = os.umask(0o022)
    try:
        assert run("mimi", "encode", speech, tmp_path / "c.safetensors").exit_code == 0
        assert run("mimi", "decode", tmp_path / "c.safetensors", tmp_path / "o.wav"
                   ).exit_code == 0
    finally:
        os.umask(old)
    for name in ("c.safetensors", "o.wav"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_asr_words_end_inside_the_audio(tmp_path):
    import json

    for seconds in (0.0, 0.3, 1.0):
        path = tmp_path / f"{seconds}.wav"
        rng = np.random.default_rng(1)
        soundfile.write(path, 0.3 * rng.standard_normal(int(24000 * seconds)), 24000)
        result = run("asr", path, "--json", "--asr-text-delay", "3")
        assert result.exit_code == 0, result.output
        words = [json.loads(line) for line in result.stdout.splitlines()]
        assert all(w["start"] <= seconds and (w["end"] is None or w["end"] <= seconds)
                   for w in words if "word" in w), (seconds, words)


def test_builtin_asr_words_are_readable(speech):
    result = run("asr", speech, "--asr-text-delay", "2")
    assert result.exit_code == 0
    assert "\ufffd" not in result.stdout
    assert "built-in tiny random Moshi LM; its output is fake" in result.stderr


def test_dialogue_fast_reports_throughput_and_the_builtin_text(speech, tmp_path):
    result = run("dialogue", speech, "--fast", "-o", tmp_path / "r.wav")
    assert result.exit_code == 0, result.output
    assert "x real time (RTF" in result.stderr and "round trip" not in result.stderr
    assert (tmp_path / "r.txt").read_text().strip()  # the built-in LM's text, readable


def test_tts_stdin_empty_line_completes_a_burst_and_streams_to_stdout(tmp_path):
    text = "Hello there.\n\nGeneral Kenobi.\n"
    result = run("tts", "-", "-o", tmp_path / "a.wav", input=text)
    assert result.exit_code == 0, result.output
    starts = [float(line.split()[0]) for line in result.stdout.splitlines()]
    assert len(starts) == 4 and starts == sorted(starts)  # the second burst comes after
    streamed = CliRunner().invoke(main, ["tts", "-", "-o", "-"], input=text)
    assert streamed.exit_code == 0
    pcm = np.frombuffer(streamed.stdout_bytes, "<i2")
    wav = soundfile.read(tmp_path / "a.wav", dtype="int16")[0]
    assert len(pcm) == len(wav) and np.abs(pcm.astype(int) - wav).max() <= 1
    assert "General" in streamed.stderr  # the words go to stderr when audio is on stdout


def test_two_servers_cannot_share_a_port():
    from services.core.grpc_server import BindError, create_server

    first, port = create_server([], "127.0.0.1:0", warm_up=False)
    try:
        with pytest.raises(BindError, match=f"cannot listen on 127.0.0.1:{port}: the port is "
                                            "in use"):
            create_server([], f"127.0.0.1:{port}", warm_up=False)
        result = run("serve", "--port", port, "--services", "mimi")  # before loading models
        assert result.exit_code == 1
        assert error_line(result).startswith(f"Error: cannot listen on 127.0.0.1:{port}: ")
    finally:
        first.stop(None)


def test_the_moshi_7b_fallback_is_announced_and_offline_is_said_as_such(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "cli.main", "tts", "Hi.", "-o",
                           str(tmp_path / "t.wav"), "--hf-repo", "kyutai/tts-1.6b-en_fr"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: kyutai/tts-1.6b-en_fr: config.json is not in the Hugging Face cache and "
        "HF_HUB_OFFLINE=1 forbids downloading it (download it once online, or give a local "
        "checkpoint)")
    assert time.monotonic() - started < 30  # no retry loop (the start-up is most of it)


def test_an_unreachable_hub_is_said_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HOME": str(tmp_path / "hf"),
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # nobody listens on the discard port
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(proxy, None)
    done = subprocess.run([sys.executable, "-m", "cli.main", "mimi", "encode", "x.wav", "y",
                           "--hf-repo", "nonexistent/repo"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    # x.wav does not exist: click says so first (fail early) ...
    assert done.returncode == 2
    soundfile.write(tmp_path / "x.wav", np.zeros(1920), 24000)
    done = subprocess.run([sys.executable, "-m", "cli.main", "mimi", "encode", "x.wav",
                           "y.safetensors", "--hf-repo", "nonexistent/repo"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1 and "Retrying" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: cannot reach the Hugging Face Hub (127.0.0.1: ")
    assert last.endswith("and nonexistent/repo: tokenizer-e351c8d8-checkpoint125.safetensors is "
                         "not in the cache (check the network, or give a local checkpoint)")


def test_help_is_fast_and_loads_no_torch():
    code = ("import sys, time; t = time.monotonic(); from cli.main import main; "
            "print(time.monotonic() - t, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ,
                         "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True)
    _, torch_loaded = out.stdout.split()
    assert torch_loaded == "False"
    for command in ([], ["asr"], ["tts"], ["dialogue"], ["serve"], ["mimi", "encode"],
                    ["lm", "generate"]):
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "cli.main", *command, "--help"], check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
        assert time.monotonic() - started < 1.5, command


def test_every_model_command_has_the_run_flags():
    for command in (["asr"], ["tts"], ["dialogue"], ["serve"], ["lm", "generate"]):
        text = run(*command, "--help").output
        for flag in ("--device", "--dtype", "--threads", "--quantize", "--kv-dtype"):
            assert flag in text, (command, flag)
    for command in (["mimi", "encode"], ["mimi", "decode"]):
        text = run(*command, "--help").output
        for flag in ("--device", "--dtype", "--threads", "--tls", "--ca-cert"):
            assert flag in text, (command, flag)
    for command in (["asr"], ["tts"], ["dialogue"]):
        assert "--tls" in run(*command, "--help").output
    assert "--voices-dir" in run("tts", "--help").output
    assert "--lm-checkpoint" in run("asr", "--help").output
    assert FIXTURES.exists()


def test_the_live_status_is_drawn_only_on_a_terminal(capsys):
    from cli.progress import LiveStatus

    off = LiveStatus(enabled=False)
    off.update("3.0 s", force=True)
    off.echo("word")
    off.close()
    assert capsys.readouterr() == ("word\n", "")
    on = LiveStatus(enabled=True)
    on.update("3.0 s", force=True)
    on.echo("word")
    on.close()
    out, err = capsys.readouterr()
    assert out == "word\n" and "3.0 s" in err and err.endswith("\r\033[K")


@pytest.mark.parametrize(("value", "window"), [(None, None), ("auto", None), ("AUTO", None),
                                               ("0", 0.0), ("25", 0.025)])
def test_the_batch_window_is_automatic_unless_given(value, window, monkeypatch):
    seen = {}

    def record(names, options, *args, **kwargs):
        seen["window"] = options.batch_window
        raise services.wiring.OptionsError("stop here")

    monkeypatch.setattr(sys.modules["cli.serve"], "build_services", record)
    args = ["serve", "--port", "0"] + ([] if value is None else ["--batch-window-ms", value])
    assert "stop here" in error_line(run(*args))
    assert seen["window"] == window


@pytest.mark.parametrize("value", ["-1", "soon", "nan"])
def test_a_bad_batch_window_is_one_line_before_any_model(value, no_model_load):
    line = error_line(run("serve", "--port", "0", "--batch-window-ms", value))
    assert "--batch-window-ms" in line and "'auto'" in line


@pytest.mark.parametrize(("flag", "expected"), [([], "one fewer"), (["--threads", "3"], 3)])
def test_serve_runs_torch_on_one_core_fewer_unless_told(flag, expected, monkeypatch):
    seen = {}

    def record(names, options, *args, **kwargs):
        seen["threads"] = torch.get_num_threads()
        raise services.wiring.OptionsError("stop here")

    before = torch.get_num_threads()
    monkeypatch.setattr(sys.modules["cli.serve"], "build_services", record)
    try:
        assert "stop here" in error_line(run("serve", "--port", "0", *flag))
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == (max(1, before - 1) if expected == "one fewer" else expected)
