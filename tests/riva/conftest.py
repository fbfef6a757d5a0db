"""The real nvidia-riva-client, in its own venv, against real servers on 127.0.0.1 port 0."""

from __future__ import annotations

import io
import json
import os
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.riva.client_venv import VenvError, ensure_venv

CLIENTS = Path(__file__).resolve().parent / "clients"


@pytest.fixture(scope="session")
def riva_python() -> Path:
    """The client venv's python, built if missing; the tests fail (not skip) without it."""
    try:
        return ensure_venv()
    except VenvError as error:
        pytest.fail(str(error))


def run_riva(python: Path, address: str, calls: list[dict], token: str | None = None,
             script: str = "riva_calls.py") -> list[dict]:
    """``calls`` made by the Riva client library in a subprocess; their results."""
    args = [str(python), str(CLIENTS / script), "--server", address]
    args += ["--token", token] if token else []
    # Not this checkout on its path: the client sees only its own venv.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(args, input=json.dumps(calls), capture_output=True, text=True,
                          timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wav_bytes(pcm: bytes, rate: int, channels: int = 1) -> bytes:
    """A WAV file of s16le ``pcm``."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


def speech_clip(seconds: float = 3.0, rate: int = 16_000) -> bytes:
    """Deterministic s16le audio: a chirp under noise (the tiny models hear words in it)."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(11)
    audio = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(len(t))
    return (audio * 32767).round().astype("<i2").tobytes()

