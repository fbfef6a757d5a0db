"""Issue 13 on a real server: auth errors say what to do; health and (behind a flag)
reflection answer without the bearer token."""

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from cli.main import main


@pytest.fixture
def speech(tmp_path):
    path = tmp_path / "in.wav"
    soundfile.write(path, 0.1 * np.random.default_rng(0).standard_normal(12000), 24000)
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_unauthenticated_and_unimplemented_servers_say_what_to_do(speech, tmp_path,
                                                                   start_server, tiny_mimi):
    from services.mimi.service import MimiService

    address = start_server([MimiService.create(tiny_mimi, max_sessions=1)],
                           auth_token="secret").address
    result = run("mimi", "encode", speech, tmp_path / "c.safetensors", "--server", address)
    assert result.exit_code == 1
    assert error_line(result) == (f"Error: {address}: UNAUTHENTICATED: missing bearer token: "
                                  "send 'authorization: Bearer <token>' metadata (give the "
                                  "server's token: --token or MOSHI_SERVICES_TOKEN)")
    result = run("asr", speech, "--server", address, "--token", "secret")
    assert result.exit_code == 1
    assert "UNIMPLEMENTED" in error_line(result)
    assert "that server does not run this service (see its --services)" in error_line(result)


def test_health_and_optionally_reflection_need_no_token(tmp_path, start_server, tiny_mimi):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    from services.mimi.service import MimiService

    running = start_server([MimiService.create(tiny_mimi, max_sessions=1)],
                           auth_token="secret", open_reflection=True)
    status = health_pb2_grpc.HealthStub(running.channel).Check(
        health_pb2.HealthCheckRequest(service="services.mimi.Mimi")).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert "services.mimi.Mimi" in set(
        ProtoReflectionDescriptorDatabase(running.channel).get_services())
