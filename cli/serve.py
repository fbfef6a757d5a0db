"""``moshi-services serve``: the gRPC services on one port, each model loaded once.

    moshi-services serve                                  # built-in tiny random models
    moshi-services serve --hf-repo kyutai/moshiko-pytorch-bf16 --port 50051
    moshi-services serve --services dialogue --mimi-address h1:50051 --lm-address h2:50051
    moshi-services serve --hf-repo kyutai/stt-1b-en_fr        # Mimi + ASR
    moshi-services serve --hf-repo kyutai/tts-1.6b-en_fr --voices-dir ~/tts-voices  # Mimi + TTS

NVIDIA Riva's ASR and TTS API is served next to ours (``services/riva/``, the same engines)
unless ``--services`` leaves ``riva`` out.

A Moshi-architecture LM (the built-in one too) serves dialogue, ASR and TTS sessions in one
batched engine: ASR delays the LM's text behind the audio forced onto Moshi's streams, TTS
delays its audio behind the forced text (``services/asr/delayed_text.py``,
``services/tts/delayed_audio.py``). A Kyutai STT or TTS checkpoint serves its own mode only.

Health reports NOT_SERVING while the models warm up, then SERVING. SIGTERM (or Ctrl-C) drains
in this order: health turns NOT_SERVING while new calls are still accepted, ``--drain-delay``
seconds later the listener closes, running streams get ``--grace`` more seconds to finish, then
the process exits.

The bearer token is best given in the environment (``MOSHI_SERVICES_TOKEN``): ``--auth-token``
works too, but any user of the machine can read a process's arguments in /proc/PID/cmdline.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click

from cli.errors import Command
from cli.options import model_options
from services.builtin import BUILTIN_PRESETS
from services.core.constants import DEFAULT_CONFIG_TIMEOUT, DEFAULT_DRAIN_DELAY
from services.core.limits import RequestLimits
from services.wiring import (
    ALL_SERVICES,
    DEFAULT_AUDIO_DELAY_FRAMES,
    DEFAULT_TEXT_DELAY_FRAMES,
    ModelOptions,
    OptionsError,
    build_services,
    close_all,
    dtype_warning,
    http_routes,
    serving_threads,
    set_threads,
)

log = logging.getLogger("moshi-services.serve")


class BatchWindow(click.ParamType):
    """--batch-window-ms: milliseconds >= 0, or "auto" (None: the engine's automatic window)."""

    name = "MS|auto"

    def convert(self, value, param, ctx) -> float | None:
        if value is None or isinstance(value, float):
            return value
        from services.core.engine import parse_batch_window_ms

        try:
            return parse_batch_window_ms(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


def _check_port(host: str, port: int, flag: str = "--port") -> None:
    """BindError now, rather than after loading the models, when ``port`` is taken."""
    import socket

    from services.core.grpc_server import BindError

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR as grpc sets it: a port left in TIME_WAIT is free, a listening one not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as e:
            raise BindError(f"cannot listen on {host}:{port}: {e.strerror}; pick another "
                            f"{flag}") from None


def _check_tls(cert: str, key: str) -> None:
    """UsageError now, in one line, when the key and certificate cannot serve TLS together
    (grpc would only say "Failed to bind" once the models are loaded)."""
    import ssl

    def no_passphrase() -> bytes:  # an encrypted key: fail, never prompt on the terminal
        return b""

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, no_passphrase)
    except ssl.SSLError as e:
        # KEY_VALUES_MISMATCH: another key of the certificate's type; NO_CERTIFICATE_ASSIGNED:
        # a key of another type (no certificate for it).
        why = ("the key does not match the certificate"
               if e.reason in ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED")
               else f"not a usable PEM certificate and unencrypted key ({e.reason or e})")
        raise click.UsageError(f"--tls-key {key} / --tls-cert {cert}: {why}") from None


def _parse_services(value: str | None) -> list[str] | None:
    if value is None:
        return None  # every service the LM supports
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ALL_SERVICES))
    if unknown or not names:
        raise click.BadParameter(f"unknown service(s) {unknown}; choose from "
                                 f"{', '.join(ALL_SERVICES)}")
    return names


@click.command(cls=Command)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on ('0.0.0.0' or '[::]' for every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=50051, show_default=True,
              help="0 picks a free port (printed).")
@click.option("--http-port", type=click.IntRange(0, 65535),
              help="Also serve HTTP on this port (0 picks a free one, printed): Kyutai's "
              "websocket protocols, /metrics, the web page; HTTPS with --tls-cert.")
@click.option("--open", "open_page", is_flag=True,
              help="With --http-port: open the web page (Talk, Transcribe, Speak) in a browser "
              "once serving.")
@click.option("--services", "service_list",
              help="Comma-separated subset of: " + ", ".join(ALL_SERVICES) + ". Default: "
              "every service the LM supports (all of them; a Kyutai STT checkpoint: mimi, asr, "
              "riva; a Kyutai TTS checkpoint: mimi, tts, riva). 'riva': NVIDIA Riva's speech "
              "API (nvidia.riva.asr.RivaSpeechRecognition, nvidia.riva.tts.RivaSpeechSynthesis) "
              "over the asr and tts services, same engines, for Riva clients; leave it out to "
              "serve ours only. The Mimi and LM services that ASR, TTS or an in-process "
              "dialogue run on are served too.")
@model_options
@click.option("--max-sessions", type=click.IntRange(1), default=8, show_default=True,
              help="Concurrent streams per model: dialogue, LM, ASR and TTS streams share "
              "the LM's slots; for Mimi as many encoding and as many decoding streams.")
@click.option("--idle-timeout", type=click.FloatRange(min=0.1), default=30.0,
              show_default=True, help="Seconds without traffic before a stream is closed.")
@click.option("--batch-window-ms", type=BatchWindow(), default="auto", show_default=True,
              help="How long a step may wait for the other sessions' frames once one has "
              "arrived: fuller batches, fewer steps under load. auto: as long as the last step "
              "took, at most 40 (half a frame); 0: step at once.")
@click.option("--asr-text-delay", type=click.IntRange(1), default=DEFAULT_TEXT_DELAY_FRAMES,
              show_default=True, help="ASR on a Moshi-architecture LM: frames (80 ms each) "
              "the text lags the audio (25 = 2 s, the Moshi paper's setting); longer: better "
              "words, later. A Kyutai STT checkpoint has its own.")
@click.option("--tts-audio-delay", type=click.IntRange(1), default=DEFAULT_AUDIO_DELAY_FRAMES,
              show_default=True, help="TTS on a Moshi-architecture LM: frames (80 ms each) "
              "the audio lags the text it speaks (25 = 2 s, the Moshi paper's setting). A "
              "Kyutai TTS checkpoint has its own.")
@click.option("--voices-dir", "--voices", "voices_dir",
              type=click.Path(exists=True, file_okay=False),
              help="Kyutai TTS checkpoint: the voices folder (e.g. a kyutai/tts-voices "
              "download); its first voice is the default.")
@click.option("--builtin", "builtin_preset", type=click.Choice(BUILTIN_PRESETS),
              default="tiny", show_default=True,
              help="Without a checkpoint: the built-in random models to serve ('null': "
              "near-zero-cost models, for benchmarking the server itself).")
@click.option("--mimi-address", help="Dialogue: use the Mimi service at this address.")
@click.option("--lm-address", help="Dialogue: use the LM service at this address.")
@click.option("--auth-token", envvar="MOSHI_SERVICES_TOKEN",
              help="Require 'authorization: Bearer TOKEN'; also sent to --mimi-address / "
              "--lm-address. Prefer the environment variable MOSHI_SERVICES_TOKEN: a token "
              "given as this flag is visible to every user in /proc/PID/cmdline.")
@click.option("--open-reflection", is_flag=True,
              help="With --auth-token: let reflection answer without the token too (so "
              "`grpcurl list` works); health always does.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="PEM certificate chain: serve TLS (with --tls-key).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False))
@click.option("--config-timeout", type=click.FloatRange(min=0.1),
              default=DEFAULT_CONFIG_TIMEOUT, show_default=True,
              help="Seconds a stream may take to send its first message (its config) before "
              "it ends with DEADLINE_EXCEEDED, so idle connections cannot hold the server.")
@click.option("--drain-delay", type=click.FloatRange(min=0), default=DEFAULT_DRAIN_DELAY,
              show_default=True, help="On shutdown: seconds health reports NOT_SERVING "
              "before the listener closes, so load balancers move new calls away first.")
@click.option("--grace", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="On shutdown, once the listener is closed: seconds running streams get "
              "to finish before they are ended.")
@click.option("--max-text-chars", type=click.IntRange(1),
              default=RequestLimits.max_text_chars, show_default=True,
              help="TTS: characters of text per request (a Synthesize call or a whole stream).")
@click.option("--max-break-seconds", type=click.FloatRange(min=0, min_open=True),
              default=RequestLimits.max_break_seconds, show_default=True,
              help="TTS: the longest <break time=\"...s\"/> a text may ask for.")
@click.option("--max-unary-audio-seconds", type=click.FloatRange(min=0, min_open=True),
              default=RequestLimits.max_unary_audio_seconds, show_default=True,
              help="Mimi Encode / Decode: seconds of audio in or out of one call (stream "
              "longer audio).")
def serve(host, port, http_port, open_page, service_list, hf_repo, mimi_checkpoint,
          lm_checkpoint, device, dtype, threads, quantize, kv_dtype, max_sessions,
          idle_timeout, batch_window_ms, asr_text_delay, tts_audio_delay, voices_dir,
          builtin_preset, mimi_address, lm_address, auth_token, open_reflection, tls_cert, tls_key,
          config_timeout, drain_delay, grace, max_text_chars, max_break_seconds,
          max_unary_audio_seconds) -> None:
    """Serve Mimi, the Moshi LM, full-duplex dialogue, ASR and TTS over gRPC, and NVIDIA
    Riva's ASR and TTS API over the same engines (health, reflection, stats:
    services.core.EngineStats/GetStats). A Moshi-architecture LM runs
    dialogue, ASR and TTS sessions in one batched engine, each with its own delays."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if tls_cert is not None:
        _check_tls(tls_cert, tls_key)
    if open_page and http_port is None:
        raise click.UsageError("--open needs --http-port (the page is served there)")
    from services.core.grpc_server import ServerOptions, create_server

    set_threads(threads or serving_threads(device))
    names = _parse_services(service_list)
    if warning := dtype_warning(device, dtype):
        click.echo(warning, err=True)
    _check_port(host, port)  # before the models load
    if http_port is not None:
        _check_port(host, http_port, "--http-port")
    options = ModelOptions(hf_repo=hf_repo, mimi_checkpoint=mimi_checkpoint,
                           lm_checkpoint=lm_checkpoint, device=device, dtype=dtype,
                           max_sessions=max_sessions, idle_timeout=idle_timeout,
                           batch_window=None if batch_window_ms is None
                           else batch_window_ms / 1000, asr_text_delay=asr_text_delay,
                           tts_audio_delay=tts_audio_delay, voices_dir=voices_dir,
                           builtin_preset=builtin_preset,
                           quantize=quantize, kv_dtype=kv_dtype,
                           limits=RequestLimits(max_text_chars=max_text_chars,
                                                max_break_seconds=max_break_seconds,
                                                max_unary_audio_seconds=max_unary_audio_seconds))
    try:
        services = build_services(names, options, mimi_address, lm_address, auth_token)
    except OptionsError as e:
        raise click.UsageError(str(e)) from None
    server_options = ServerOptions(
        auth_token=auth_token, open_reflection=open_reflection,
        tls_cert_chain=Path(tls_cert).read_bytes() if tls_cert else None,
        tls_private_key=Path(tls_key).read_bytes() if tls_key else None,
        config_timeout=config_timeout,
        http_address=None if http_port is None else f"{host}:{http_port}")
    server, bound = create_server(services, f"{host}:{port}", server_options, warm_up=False,
                                  http_routes=http_routes(services))
    click.echo(f"listening on {host}:{bound} ({', '.join(s.name for s in services)}); "
               "warming up", err=True)
    if server.http_port is not None:
        scheme = "https" if tls_cert else "http"
        click.echo(f"http on {scheme}://{host}:{server.http_port}/", err=True)
        # An address that listens on every interface is reached here as localhost.
        page_host = "localhost" if host.strip("[]") in ("0.0.0.0", "::") else host
        page_url = f"{scheme}://{page_host}:{server.http_port}/"
        if open_page:  # now: while the models warm up the page says so, then connects
            import webbrowser

            if not webbrowser.open(page_url):
                click.echo(f"could not start a browser: open {page_url}", err=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    for service in services:
        service.warm_up()
    server.set_health(serving=True)
    click.echo("serving", err=True)
    while not stop.wait(0.5):  # a timed wait lets the signal handlers run
        pass
    click.echo(f"shutting down: NOT_SERVING, the listener closes in {drain_delay:g} s, "
               f"streams end {grace:g} s later", err=True)
    server.shutdown(grace, drain_delay)
    close_all(services)
