"""The README's Riva commands, run as written (the venv and the port put in) against a real
`moshi-services serve` process with the built-in models."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import wave
from pathlib import Path

import numpy as np
import soundfile

from tests.grpc.conftest import spawn_serve
from tests.riva.client_venv import RIVA_CLIENT, RUNTIME

REPO = Path(__file__).resolve().parents[2]
README_ADDRESS = "127.0.0.1:50051"


def riva_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("### NVIDIA Riva clients")
    return text[start:text.index("\n## ", start)]


def test_the_readme_installs_the_client_as_the_tests_do():
    (install,) = [line for line in riva_section().splitlines()
                  if line.startswith("python3 -m venv riva-venv")]
    assert RIVA_CLIENT in install and all(package in install for package in RUNTIME)
    assert "--no-deps nvidia-riva-client" in install


def test_the_readme_riva_commands_work_against_serve(riva_python, tmp_path):
    commands = [line for line in riva_section().splitlines()
                if line.startswith("riva-venv/bin/python -c")]
    assert len(commands) == 3
    # in.wav as the README's first example makes it
    soundfile.write(tmp_path / "in.wav",
                    0.3 * np.sin(np.arange(72000) * 2 * np.pi * 220 / 24000), 24000)
    process, port = spawn_serve()
    try:
        assert port, "serve did not start"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        outputs = []
        for command in commands:
            args = shlex.split(command.replace(README_ADDRESS, f"127.0.0.1:{port}"))
            args[0] = str(riva_python)
            done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True,
                                  timeout=300, env=env, check=False)
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout)
    finally:
        process.terminate()
        process.wait(30)
    offline = re.search(r"^Final transcript: (.*)$", outputs[0], re.MULTILINE)[1]
    # print_streaming prints each final as "Time ...s: Transcript 0: ...", then its words.
    streamed = re.findall(r"^Time [\d.]+s: Transcript 0: (.*)$", outputs[1], re.MULTILINE)
    assert offline.strip() and "".join(streamed) == offline
    assert "Timestamps:" in outputs[1]
    with wave.open(str(tmp_path / "hello.wav")) as hello:
        assert hello.getframerate() == 22050 and hello.getnframes() > 22050 // 2
