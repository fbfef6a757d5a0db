import soundfile
from click.testing import CliRunner

from cli.main import main
from services.core.grpc_server import ServerOptions, create_server
from services.wiring import ModelOptions, build_services, close_all

TEXT = "Hello world, this is a test."


def run(*args, **kwargs):
    result = CliRunner().invoke(main, ["tts", *args], catch_exceptions=False, **kwargs)
    assert result.exit_code == 0, result.output
    return result


def test_tts_in_process_stdin_and_server_agree(tmp_path):
    local = run(TEXT, "-o", str(tmp_path / "a.wav"))
    assert "random" in local.output  # the built-in model warns
    lines = [l.split() for l in local.output.splitlines() if l[:1] == " "]  # noqa: E741
    assert [w for _, w in lines] == TEXT.split()
    audio, rate = soundfile.read(tmp_path / "a.wav", dtype="int16")
    assert rate == 24000 and len(audio) > 0 and len(audio) % 1920 == 0
    streamed = run("-", "-o", str(tmp_path / "b.wav"), input="Hello world,\nthis is a test.\n")
    assert (soundfile.read(tmp_path / "b.wav", dtype="int16")[0] == audio).all()
    assert streamed.output.count("test.") == 1
    services = build_services(["tts"], ModelOptions(max_sessions=2))  # as `serve` builds it
    server, port = create_server(services, "127.0.0.1:0", ServerOptions())
    try:
        run(TEXT, "-o", str(tmp_path / "c.wav"), "--server", f"127.0.0.1:{port}")
    finally:
        server.stop(None)
        close_all(services)
    # Same tokens; the float path differs by rounding only (threads, batch shapes).
    served = soundfile.read(tmp_path / "c.wav", dtype="int16")[0].astype(int)
    assert len(served) == len(audio) and abs(served - audio).max() <= 2
