import json

import numpy as np
from click.testing import CliRunner

from cli.main import main
from services.core.audio import write_wav
from services.core.grpc_server import ServerOptions, create_server
from services.wiring import ModelOptions, build_services, close_all


def run(*args):
    result = CliRunner().invoke(main, ["asr", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def events(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_asr_in_process_and_server_agree(tmp_path):
    path = tmp_path / "in.wav"
    write_wav(path, np.random.default_rng(0).uniform(-0.3, 0.3, 24000 * 2).astype(np.float32))
    local = events(run(str(path), "--json", "--interim").output)
    finals = [e for e in local if e.get("final")]
    assert finals and all(e["end"] >= e["start"] >= 0 for e in finals)
    services = build_services(["asr"], ModelOptions(max_sessions=2))  # as `serve` builds it
    server, port = create_server(services, "127.0.0.1:0", ServerOptions())
    try:
        remote = events(run(str(path), "--json", "--interim", "--server",
                            f"127.0.0.1:{port}").output)
    finally:
        server.stop(None)
        close_all(services)
    assert remote == local
    text = run(str(path)).output.splitlines()
    assert len([line for line in text if not line.startswith("warning")]) == len(finals)
