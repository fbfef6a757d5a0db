"""Real headless Chromium (the distribution's ``chromium`` and ``chromium-driver``, driven by
selenium through ``/usr/bin/chromedriver``: nothing is downloaded) with a wav file as its
microphone, and real ``serve`` processes for it to talk to.

A missing browser is a failure, not a skip: ``.ci/run`` installs it, and a test that skips
silently would claim the page works when nobody looked.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = ("install them with `apt-get install chromium chromium-driver` and "
           "`pip install selenium` (.ci/run does)")
# No network beyond the page's own server, no first-run work, no GPU; a wav as the microphone
# and no permission prompt for it.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  "--window-size=1000,1000")


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None or not CHROMEDRIVER.exists():
        pytest.fail(f"the browser test needs Chromium and its driver ({CHROMEDRIVER}): "
                    f"{INSTALL}", pytrace=False)
    return found


def write_speech(path: Path, seconds: float = 4.0, rate: int = 24_000) -> Path:
    """A speech-like wav: a voiced 130 Hz source with vowel-ish harmonics, in syllables of
    about 200 ms separated by short gaps (Chromium loops the file as its microphone)."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 130 * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t))  # a slowly moving pitch
    phase = 2 * np.pi * np.cumsum(f0) / rate
    formants = (1.0, 0.8, 0.6, 0.5, 0.35, 0.3, 0.2, 0.15)
    voice = sum(a * np.sin((k + 1) * phase) for k, a in enumerate(formants))
    syllables = np.clip(np.sin(2 * np.pi * 2.5 * t) * 1.6, 0, 1) ** 0.5
    audio = 0.25 * voice / np.abs(voice).max() * syllables
    sf.write(path, audio.astype(np.float32), rate, subtype="PCM_16")
    return path


@pytest.fixture
def speech_wav(tmp_path: Path) -> Path:
    return write_speech(tmp_path / "speech.wav")


class Browser:
    """One Chromium: ``open(url)``, ``js(expression)``, ``wait(condition)``, screenshots."""

    def __init__(self, driver, shots: Path):
        self.driver, self.shots = driver, shots

    def open(self, url: str) -> None:
        self.driver.get(url)
        self.wait("window.moshiPage !== undefined", 20, "the page's scripts to load")

    def js(self, expression: str):
        return self.driver.execute_script(f"return {expression};")

    def click(self, element_id: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.ID, element_id).click()

    def tab(self, name: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.CSS_SELECTOR, f"[data-panel={name}]").click()

    def set_values(self, values: dict[str, object]) -> None:
        """Sets inputs by id (``details`` panels need not be open)."""
        for element_id, value in values.items():
            self.driver.execute_script("document.getElementById(arguments[0]).value = "
                                       "arguments[1];", element_id, str(value))

    def text(self, element_id: str) -> str:
        return self.js(f"document.getElementById({json.dumps(element_id)}).textContent")

    def wait(self, condition: str, timeout: float, what: str, details: str = "null"):
        """Polls the JavaScript ``condition`` until truthy; fails naming ``what`` with the
        JavaScript ``details`` and the browser's console."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(condition)
            if value:
                return value
            if time.monotonic() > deadline:
                self.screenshot("timeout")
                pytest.fail(f"waited {timeout:g} s for {what}; {self.js(details)!r}; "
                            f"console: {self.console()}", pytrace=False)
            time.sleep(0.2)

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def console(self) -> list[str]:
        return [entry["message"] for entry in self.driver.get_log("browser")]


@pytest.fixture
def browser(tmp_path: Path, speech_wav: Path) -> Iterator[Callable[[], Browser]]:
    """browser(*flags) -> a started headless Chromium (with ``flags`` besides the usual ones)
    whose microphone plays ``speech_wav``; quit after the test. Screenshots go to
    ``tmp_path``."""
    binary = chromium_binary()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"the browser test needs selenium: {INSTALL}", pytrace=False)
    profiles = itertools.count()
    with contextlib.ExitStack() as stack:

        def start(*flags: str) -> Browser:
            options = webdriver.ChromeOptions()
            options.binary_location = binary
            for flag in (*CHROMIUM_FLAGS, *flags):
                options.add_argument(flag)
            options.add_argument(f"--use-file-for-fake-audio-capture={speech_wav}")
            profile = tmp_path / f"profile-{next(profiles)}"  # a fresh one per browser
            options.add_argument(f"--user-data-dir={profile}")
            options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
            driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
            stack.callback(driver.quit)
            return Browser(driver, tmp_path)

        yield start


class Served:
    """A ``serve --http-port 0`` process: its gRPC and HTTP ports, and its stderr so far."""

    def __init__(self, *args: str):
        from tests.grpc.conftest import spawn_serve

        self.process, self.port = spawn_serve("--http-port", "0", *args)
        self.http_port = self.process.http_port
        self.lines: list[str] = []
        # Read the rest of stderr: a full pipe would block the server's logging.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.http_port or self.process.poll() is not None:
            self.stop()
            pytest.fail(f"serve did not start: {self.log()}", pytrace=False)

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    def log(self) -> str:
        return "".join(self.lines[-30:])

    def engine_stats(self) -> list:
        """GetStats over gRPC: the server's engines now."""
        from services.core import stats_pb2, stats_pb2_grpc
        from services.core.grpc_server import create_channel

        with create_channel(f"127.0.0.1:{self.port}") as channel:
            stub = stats_pb2_grpc.EngineStatsStub(channel)
            return list(stub.GetStats(stats_pb2.GetStatsRequest(), timeout=10).engines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """serve(*flags) -> a running ``serve --http-port 0 *flags`` (built-in models unless the
    flags name others), stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(*args: str) -> Served:
            served = Served(*args)
            stack.callback(served.stop)
            return served

        yield start
