"""The web page, served by the real server and run in real headless Chromium with a wav as
its microphone: Talk streams the microphone to Moshi and plays its voice (an analyser on the
output hears it), Transcribe and Speak produce words and audio, and the page says when the
model is loading, the server is full, the token is wrong or the connection is lost.
Screenshots of each go to the test's ``tmp_path``."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.request
from fnmatch import fnmatch
from pathlib import Path

import msgpack
import pytest

from services.core.grpc_server import ServerOptions, create_server
from services.web.routes import CONTENT_TYPES, STATIC, WebPage, static_files

REPO = Path(__file__).resolve().parents[2]
STATS = "JSON.stringify({talk: moshiPage.talk.stats, transcribe: moshiPage.transcribe.stats, " \
        "speak: moshiPage.speak.stats, server: moshiPage.state})"


def page_only_server():
    """A server with the page and no models (health NOT_SERVING until set)."""
    server, _ = create_server([], options=ServerOptions(http_address="127.0.0.1:0"),
                              warm_up=False, http_routes=[WebPage()])
    return server


def _get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_the_page_and_its_files_are_served_with_their_types():
    server = page_only_server()
    try:
        base = f"http://127.0.0.1:{server.http_port}"
        status, headers, body = _get(f"{base}/")
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert b'<script type="module" src="static/js/main.js">' in body
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        files = static_files()
        assert {"js/main.js", "js/msgpack.js", "worklets/capture.js", "worklets/playback.js",
                "style.css"} <= set(files)
        for name, path in files.items():
            status, headers, body = _get(f"{base}/static/{name}")
            assert status == 200, name
            assert headers["Content-Type"].split(";")[0] == CONTENT_TYPES[path.suffix], name
            assert body == path.read_bytes()
        assert _get(f"{base}/static/../routes.py")[0] == 404
        assert _get(f"{base}/static/nothing.js")[0] == 404
    finally:
        server.stop(None).wait()


def test_every_file_of_the_page_ships_as_package_data():
    from setuptools.config.pyprojecttoml import read_configuration

    patterns = read_configuration(REPO / "pyproject.toml")["tool"]["setuptools"][
        "package-data"]["services.web"]
    for path in STATIC.rglob("*"):
        if path.is_file():
            relative = path.relative_to(STATIC.parent).as_posix()
            assert any(fnmatch(relative, p) and relative.count("/") == p.count("/")
                       for p in patterns), f"{relative} is not in pyproject's package-data"


def test_page_has_no_reference_outside_its_server():
    """No absolute URL in the page's code (whole-line comments aside): every script, style
    and socket is relative to the page, so it works offline and behind a path prefix."""
    absolute = re.compile(r"""(?:https?|wss?)://\w|["'(]//\w""")
    for path in STATIC.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = "" if line.lstrip().startswith("//") else line
                assert not absolute.search(code), (path.name, number, line)


# ---- in the browser ----------------------------------------------------------------------------

MSGPACK_VALUES = [
    None, True, False, 0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**53 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**53) + 1,
    0.5, -1.25, 1e300, "", "a", "é" * 40, "x" * 300, "y" * 70000, [], list(range(20)),
    {"type": "Word", "text": "hello", "start_time": 1.5}, {"k" * 40: [1, {"n": None}]},
    {str(i): i for i in range(20)},
]


def test_msgpack_in_the_browser_matches_python(browser):
    server = page_only_server()
    try:
        page = browser()
        page.open(f"http://127.0.0.1:{server.http_port}/")
        packed = [base64.b64encode(msgpack.packb(v)).decode() for v in MSGPACK_VALUES]
        result = page.driver.execute_async_script("""
            const [values, packed, done] = arguments;
            const b64 = (bytes) => btoa(String.fromCharCode(...bytes));
            const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
            import("./static/js/msgpack.js").then((m) => {
              const audio = new Float32Array([0, 0.5, -1, 0.25]);
              done({encoded: values.map((v) => b64(m.encode(v))),
                    decoded: packed.map((p) => m.decode(unb64(p))),
                    audio: b64(m.encode({type: "Audio", pcm: audio})),
                    bin: b64(m.encode(new Uint8Array([1, 2, 255])))});
            }, (error) => done(String(error)));
        """, MSGPACK_VALUES, packed)
        assert isinstance(result, dict), result
        for value, encoded in zip(MSGPACK_VALUES, result["encoded"], strict=True):
            assert msgpack.unpackb(base64.b64decode(encoded), strict_map_key=False) == value
        assert result["decoded"] == json.loads(json.dumps(MSGPACK_VALUES))
        audio = msgpack.unpackb(base64.b64decode(result["audio"]))
        assert audio == {"type": "Audio", "pcm": [0.0, 0.5, -1.0, 0.25]}
        assert base64.b64decode(result["audio"]).count(b"\xca") == 4  # float32 samples
        assert msgpack.unpackb(base64.b64decode(result["bin"])) == b"\x01\x02\xff"
    finally:
        server.stop(None).wait()


def test_the_page_says_the_model_is_loading_until_the_server_serves(browser):
    server = page_only_server()  # health NOT_SERVING, as serve while it warms up
    try:
        page = browser()
        page.open(f"http://127.0.0.1:{server.http_port}/")
        page.wait("moshiPage.state === 'loading'", 10, "the loading state", STATS)
        assert "Loading the model" in page.text("banner")
        assert page.js("document.getElementById('talk-connect').disabled")
        page.screenshot("loading")
        server.set_health(serving=True)
        page.wait("moshiPage.state === 'serving'", 10, "the serving state", STATS)
        assert page.js("document.getElementById('banner').hidden")
        assert not page.js("document.getElementById('talk-connect').disabled")
    finally:
        server.stop(None).wait()


def _engine_frames(served) -> tuple[int, int]:
    """(active sessions, frames) summed over the server's engines."""
    engines = served.engine_stats()
    return sum(e.active_sessions for e in engines), sum(e.frames for e in engines)


@pytest.mark.slow
def test_talk_transcribe_and_speak_in_chromium_against_serve(browser, serve, speech_wav):
    served = serve()  # the built-in tiny models: dialogue, ASR and TTS on one engine
    page = browser()
    page.open(served.url)
    page.wait("moshiPage.state === 'serving'", 30, "the page to see the server serving", STATS)
    _, frames_before = _engine_frames(served)

    # Talk: the microphone (the wav) streams to Moshi; its audio plays, its text shows.
    page.click("talk-connect")
    page.wait("moshiPage.talk.stats.state === 'connected'", 30, "Talk to connect", STATS)
    page.wait("moshiPage.talk.stats.framesSent >= 25 && moshiPage.talk.stats.textPieces > 0"
              " && moshiPage.talk.stats.outputRmsMax > 0 && moshiPage.talk.stats.latencyMs",
              60, "microphone frames out, Moshi's text and audio back", STATS)
    for _ in range(50):  # the last frames sent may still be on their way
        active, frames = _engine_frames(served)
        if frames - frames_before >= 25:
            break
        time.sleep(0.2)
    assert active >= 1, "the server's stats show no session while Talk is connected"
    assert frames - frames_before >= 25, (frames, frames_before)
    talk = page.js("moshiPage.talk.stats")
    assert talk["micRmsMax"] > 0.01 and talk["samplesReceived"] >= 1920
    assert page.text("talk-text").strip()
    assert page.text("talk-latency").endswith("ms)")
    assert "echoCancellation on" in page.text("talk-mic-settings")
    page.screenshot("talk")
    page.click("talk-disconnect")
    page.wait("moshiPage.talk.stats.state === 'idle'", 10, "Talk to disconnect", STATS)

    # Transcribe: a file dropped on the panel -> words with times. The tiny random model
    # says words only when its text is sampled: with this seed it says one for this audio.
    page.tab("transcribe")
    page.set_values({"asr-temperature": 1, "asr-top-k": 0, "asr-seed": 3})
    page.driver.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "speech.wav", {type: "audio/wav"}));
        document.getElementById("asr-drop").dispatchEvent(
            new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    """, base64.b64encode(speech_wav.read_bytes()).decode())
    page.wait("moshiPage.transcribe.stats.state === 'done'", 60, "the file's transcription",
              STATS)
    transcribe = page.js("moshiPage.transcribe.stats")
    assert transcribe["done"] and transcribe["words"], transcribe
    assert transcribe["samplesSent"] == 4 * 24000
    assert page.js("document.querySelectorAll('#asr-words .word').length") == \
        len(transcribe["words"])
    page.screenshot("transcribe")
    # ... and the microphone, until Stop: the last words come once the marker is back.
    page.click("asr-mic")
    page.wait("moshiPage.transcribe.stats.samplesSent >= 24000", 30,
              "a second of microphone audio sent", STATS)
    page.click("asr-stop")
    page.wait("moshiPage.transcribe.stats.state === 'done'", 30, "the microphone's "
              "transcription to finish", STATS)
    assert page.js("moshiPage.transcribe.stats.done")  # the marker came back

    # Speak: text -> audio as it is produced, played (the analyser hears it), downloadable.
    page.tab("speak")
    assert page.js("document.getElementById('tts-voice').options.length") >= 1
    page.click("tts-speak")
    page.wait("moshiPage.speak.stats.state === 'done'", 60, "the synthesis", STATS)
    page.wait("moshiPage.speak.stats.outputRmsMax > 0", 10, "the speech to play", STATS)
    speak = page.js("moshiPage.speak.stats")
    assert speak["samplesReceived"] >= 1920 and speak["words"], speak
    assert speak["download"]["bytes"] == 44 + 2 * speak["samplesReceived"]
    size = page.driver.execute_async_script("""
        const done = arguments[0];
        fetch(document.getElementById("tts-download").href)
          .then((r) => r.arrayBuffer()).then((b) => done(b.byteLength), (e) => done(String(e)));
    """)
    assert size == speak["download"]["bytes"]
    page.screenshot("speak")

    # Everything the page loaded came from its server.
    origins = page.js("performance.getEntriesByType('resource').map((e) => e.name)")
    assert origins and all(u.startswith(served.url) for u in origins), origins


@pytest.mark.slow
def test_wrong_token_full_server_and_lost_connection_are_said(browser, serve):
    served = serve("--builtin", "null", "--max-sessions", "1", "--auth-token", "secret")
    wrong = browser()
    wrong.open(f"{served.url}?token=wrong")
    wrong.wait("moshiPage.state === 'auth' || moshiPage.state === 'serving'", 30,
               "the page to reach the server", STATS)
    if wrong.js("moshiPage.state") == "serving":  # /api/info answers without the token
        wrong.click("talk-connect")
        wrong.wait("moshiPage.talk.stats.state === 'auth'", 20, "Talk to say the token is "
                   "wrong", STATS)
        assert "Wrong token" in wrong.text("talk-state")
    else:
        assert "Wrong token" in wrong.text("banner")
    wrong.screenshot("wrong_token")

    page = browser()
    page.open(f"{served.url}?token=secret")
    page.wait("moshiPage.state === 'serving'", 30, "the page to see the server", STATS)
    page.set_values({"talk-temperature": -1})  # bad input: the server's message is shown
    page.click("talk-connect")
    page.wait("moshiPage.talk.stats.state === 'error'", 20, "Talk to show the error", STATS)
    assert page.text("talk-state").startswith("Error: ") and "temperature" in \
        page.text("talk-state")
    page.set_values({"talk-temperature": ""})
    page.click("talk-connect")  # takes the one slot
    page.wait("moshiPage.talk.stats.state === 'connected'", 30, "Talk to connect", STATS)
    page.tab("transcribe")
    page.click("asr-mic")
    page.wait("moshiPage.transcribe.stats.state === 'full'", 20, "Transcribe to find the "
              "server full", STATS)
    said = page.text("asr-state")
    assert said.startswith("Server full: ") and "slots are busy" in said and "retry in" in said
    assert not page.js("document.getElementById('asr-retry').hidden")
    page.screenshot("server_full")

    page.tab("talk")
    served.stop()
    page.wait("moshiPage.talk.stats.state === 'lost' && moshiPage.state === 'lost'", 20,
              "the page to say the connection is lost", STATS)
    assert page.text("talk-state").startswith("Connection lost")
    assert "Connection lost" in page.text("banner")
    page.screenshot("connection_lost")


def test_serve_open_starts_a_browser_on_the_page(tmp_path, monkeypatch):
    from tests.grpc.conftest import spawn_serve

    opened = tmp_path / "opened"
    # webbrowser runs $BROWSER with the URL for %s (it must still run when asked, hence sleep).
    monkeypatch.setenv("BROWSER", f"sh -c 'echo %s > {opened}; sleep 2'")
    process, _ = spawn_serve("--builtin", "null", "--http-port", "0", "--open")
    try:
        assert process.http_port
        for _ in range(100):
            if opened.exists() and opened.read_text().strip():
                break
            time.sleep(0.1)
        assert opened.read_text().strip() == f"http://127.0.0.1:{process.http_port}/"
    finally:
        process.terminate()
        process.wait(30)


def test_serve_open_needs_the_http_port():
    from click.testing import CliRunner

    from cli.serve import serve

    result = CliRunner().invoke(serve, ["--open"])
    assert result.exit_code == 2 and "--open needs --http-port" in result.output


def test_end_of_turn_markers_when_the_model_has_pause_heads(browser, tmp_path):
    """A Kyutai STT-layout model with pause heads (the tiny golden one, a stand-in codec):
    the page turns its end-of-turn markers on, Step messages with the heads' probabilities
    arrive, and a turn ends once head 2 passes 0.5 after a word (once per turn)."""
    from services.asr.service import ASRService
    from services.core.tick import speech_engine
    from services.kyutai import kyutai_routes
    from services.moshi_lm.generate import LMGenerator
    from services.wiring import close_all
    from tests.asr.test_asr_service import TIMING, StandInCodec, decode, load
    from tests.web.conftest import write_speech

    model = load("lm_dev_stt_vad")
    service = ASRService.on_stt(speech_engine(2, LMGenerator(model), StandInCodec()),
                                model.cfg, decode, "vad", timing=TIMING)
    server, _ = create_server([service], options=ServerOptions(http_address="127.0.0.1:0"),
                              http_routes=[*kyutai_routes([service]), WebPage()])
    try:
        page = browser()
        page.open(f"http://127.0.0.1:{server.http_port}/")
        page.wait("moshiPage.state === 'serving'", 20, "the page to see the server", STATS)
        assert page.js("moshiPage.pauseHeads")
        assert page.text("asr-turns").startswith("End-of-turn markers: on")
        page.tab("transcribe")
        page.driver.find_element("id", "asr-file").send_keys(
            str(write_speech(tmp_path / "short.wav", seconds=1.0)))
        page.wait("moshiPage.transcribe.stats.state === 'done'", 30, "the transcription", STATS)
        assert page.js("moshiPage.transcribe.stats.steps") >= 12  # a Step per 80 ms frame
        # The rule, on messages as the server sends them (the tiny model's heads stay < 0.5).
        marks = page.driver.execute_async_script("""
            const done = arguments[0];
            import("./static/js/msgpack.js").then(({encode}) => {
              const panel = moshiPage.transcribe, words = document.getElementById("asr-words");
              panel.socket = {close() {}, error() {}};
              const count = () => words.querySelectorAll(".end-of-turn").length;
              const step = (p2) => panel.onMessage(encode({type: "Step", step_idx: 0,
                                                           prs: [0, 0, p2, 0], buffered_pcm: 0}));
              const seen = [];
              step(0.9); seen.push(count());                   // no word yet: no turn to end
              panel.onMessage(encode({type: "Word", text: "hi", start_time: 0.5}));
              step(0.4); seen.push(count());
              step(0.6); seen.push(count());                   // the turn ends
              step(0.9); seen.push(count());                   // once
              panel.socket = null;
              done(seen);
            });
        """)
        assert marks == [0, 0, 1, 1]
        page.screenshot("end_of_turn")
    finally:
        server.stop(None).wait()
        close_all([service])


def test_worklets_resample_when_the_browser_runs_another_rate(browser):
    """A browser that refuses a 24 kHz AudioContext gets one at its own rate: the capture
    worklet still posts 1920-sample chunks at 24 kHz, and playback still plays 24 kHz audio at
    its pitch (a 440 Hz tone stays 440 Hz both ways). Playback keeps its latency bounded: a
    burst beyond the bound is dropped, and so is a queue that stands."""
    server = page_only_server()
    try:
        page = browser()
        page.open(f"http://127.0.0.1:{server.http_port}/")
        # An AudioContext may start only from a user gesture: a button the test clicks.
        page.driver.execute_script("""
            const done = (value) => { window.testResult = value; };
            const crossings = (x) => { let n = 0;
              for (let i = 1; i < x.length; i++) if (x[i - 1] < 0 && x[i] >= 0) n++; return n; };
            const button = document.createElement("button");
            button.id = "test-resampling";
            document.body.append(button);
            button.onclick = () => (async () => {
              const context = new AudioContext({sampleRate: 48000});
              await context.audioWorklet.addModule("static/worklets/capture.js");
              await context.audioWorklet.addModule("static/worklets/playback.js");
              const tone = context.createOscillator();
              tone.frequency.value = 440;
              const capture = new AudioWorkletNode(context, "capture", {numberOfInputs: 1,
                numberOfOutputs: 0, processorOptions: {rate: 24000, chunk: 1920}});
              const chunks = [];
              capture.port.onmessage = (e) => chunks.push(e.data.pcm);
              tone.connect(capture);
              tone.start();
              // 24 kHz: 0.5 s of a 440 Hz tone, played through the playback worklet.
              const player = new AudioWorkletNode(context, "playback", {numberOfInputs: 0,
                numberOfOutputs: 1, outputChannelCount: [1],
                processorOptions: {rate: 24000, max: 0}});  // max 0: keep the whole second
              const analyser = context.createAnalyser();
              analyser.fftSize = 32768;
              player.connect(analyser);
              analyser.connect(context.destination);
              const sine = new Float32Array(12000 * 2);
              for (let i = 0; i < sine.length; i++) {
                sine[i] = 0.5 * Math.sin(2 * Math.PI * 440 * i / 24000);
              }
              player.port.postMessage({pcm: sine});
              // With the default bound, a second arriving at once is cut to one frame: the
              // latency a burst would add is dropped (and counted).
              const bounded = new AudioWorkletNode(context, "playback", {numberOfInputs: 0,
                numberOfOutputs: 1, outputChannelCount: [1], processorOptions: {rate: 24000}});
              let status = null;
              bounded.port.onmessage = (e) => { status = e.data; };
              bounded.connect(context.destination);
              bounded.port.postMessage({pcm: sine.slice()});
              // A queue that stands (here 11000 samples, below the bound, for 0.2 s) is cut
              // back to one frame: what it held beyond that is dropped.
              const trimmed = new AudioWorkletNode(context, "playback", {numberOfInputs: 0,
                numberOfOutputs: 1, outputChannelCount: [1],
                processorOptions: {rate: 24000, trim: 0.2}});
              let trimStatus = null;
              trimmed.port.onmessage = (e) => { trimStatus = e.data; };
              trimmed.connect(context.destination);
              trimmed.port.postMessage({pcm: sine.slice(0, 11000)});
              await new Promise((r) => setTimeout(r, 900));
              const out = new Float32Array(analyser.fftSize);  // the last 0.68 s at 48 kHz
              analyser.getFloatTimeDomainData(out);
              const played = out.subarray(0, 12000);  // inside the tone (it lasts 1 s)
              const captured = new Float32Array(chunks.slice(1, 6).flatMap((c) => [...c]));
              done({rate: context.sampleRate, sizes: chunks.map((c) => c.length),
                    capturedHz: crossings(captured) / (captured.length / 24000),
                    playedHz: crossings(played) / (played.length / 48000), bounded: status,
                    trimmed: trimStatus});
            })().catch((e) => done(String(e)));
        """)
        page.click("test-resampling")
        result = page.wait("window.testResult", 10, "the worklets' result")
        assert isinstance(result, dict), result
        assert result["rate"] == 48000 and len(result["sizes"]) >= 6
        assert set(result["sizes"]) == {1920}
        assert abs(result["capturedHz"] - 440) < 15, result
        assert abs(result["playedHz"] - 440) < 15, result
        assert result["bounded"]["dropped"] == 24000 - 1920, result
        # 0.2 s played 4800 of the 11000; the 6200 left, less one frame, are dropped.
        assert abs(result["trimmed"]["dropped"] - (11000 - 4800 - 1920)) <= 256, result
        assert result["trimmed"]["played"] + result["trimmed"]["dropped"] == 11000, result
    finally:
        server.stop(None).wait()


@pytest.mark.slow
def test_over_https_the_page_talks_over_wss(browser, serve):
    """Served with the server's certificate, the page and its sockets are https / wss (a
    browser gives the microphone only to secure pages, localhost aside). A server with only
    the dialogue: the other panels say it does not serve them."""
    fixtures = REPO / "tests" / "fixtures"
    served = serve("--builtin", "null", "--services", "dialogue",
                   "--tls-cert", str(fixtures / "tls_localhost.crt"),
                   "--tls-key", str(fixtures / "tls_localhost.key"))
    page = browser("--ignore-certificate-errors")  # the test certificate is self-signed
    page.open(f"https://localhost:{served.http_port}/")
    page.wait("moshiPage.state === 'serving'", 30, "the page to see the server", STATS)
    assert page.js("window.isSecureContext")
    # Only the dialogue is served: Transcribe and Speak say so and cannot start.
    for panel, start in (("transcribe", "asr-mic"), ("speak", "tts-speak")):
        assert not page.js(f"document.getElementById('{panel}-missing').hidden")
        assert page.js(f"document.getElementById('{start}').disabled")
    assert page.js("document.getElementById('talk-missing').hidden")
    page.click("talk-connect")
    page.wait("moshiPage.talk.stats.samplesReceived >= 1920", 30, "Moshi's audio over wss",
              STATS)
    sockets = page.js("performance.getEntriesByType('resource').map((e) => e.name)")
    assert all(u.startswith(f"https://localhost:{served.http_port}/") for u in sockets)
