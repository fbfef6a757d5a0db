"""``moshi-services serve``: the gRPC services on one port, each model loaded once.

    moshi-services serve                                  # built-in tiny random models
    moshi-services serve --hf-repo kyutai/moshiko-pytorch-bf16 --port 50051
    moshi-services serve --services dialogue --mimi-address h1:50051 --lm-address h2:50051
    moshi-services serve --hf-repo kyutai/stt-1b-en_fr        # Mimi + ASR
    moshi-services serve --hf-repo kyutai/tts-1.6b-en_fr --voices-dir ~/tts-voices  # Mimi + TTS

A Moshi-architecture LM (the built-in one too) serves dialogue, ASR and TTS sessions in one
batched engine: ASR delays the LM's text behind the audio forced onto Moshi's streams, TTS
delays its audio behind the forced text (``services/asr/delayed_text.py``,
``services/tts/delayed_audio.py``). A Kyutai STT or TTS checkpoint serves its own mode only.

Health reports NOT_SERVING while the models warm up, then SERVING; SIGTERM (or Ctrl-C) turns
it NOT_SERVING, lets running streams finish for ``--grace`` seconds and exits.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np
import torch
from grpc_health.v1 import health

from services.core.grpc_server import (
    GrpcService,
    ServerOptions,
    create_channel,
    create_server,
    set_health,
)
from services.moshi_lm.config import LMConfig

if TYPE_CHECKING:
    from services.mimi.service import MimiService
    from services.moshi_lm.service import MoshiLMService
    from services.moshi_lm.tokenizer import TextTokenizer

log = logging.getLogger("moshi-services.serve")

ALL_SERVICES = ("mimi", "lm", "dialogue", "asr", "tts")
# What each kind of LM checkpoint serves (see checkpoint_kind); the default of --services.
SUPPORTED = {"moshi": ALL_SERVICES, "stt": ("mimi", "asr"), "tts": ("mimi", "tts")}
BUILTIN_SEED = 0  # every process builds the same random weights: separate servers agree
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# The Moshi paper's streaming ASR and TTS by delays: 2 s (25 frames) each way.
DEFAULT_TEXT_DELAY_FRAMES = 25
DEFAULT_AUDIO_DELAY_FRAMES = 25
# Built-in random model pairs (a Mimi and an LM preset of the same name): "tiny", the default
# stand-in for a checkpoint, and "null", whose steps cost next to nothing so a benchmark of
# the server measures the serving around the models (bench/bench_serving.py).
BUILTIN_PRESETS = ("tiny", "null")


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """Where the models come from (nothing given: the built-in tiny random models) and how
    they run."""

    hf_repo: str | None = None
    mimi_checkpoint: str | None = None
    lm_checkpoint: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    max_sessions: int = 8
    idle_timeout: float = 30.0
    batch_window: float = 0.0  # seconds; see services.core.engine.Engine
    asr_text_delay: int = DEFAULT_TEXT_DELAY_FRAMES  # frames; ASR on a Moshi-architecture LM
    tts_audio_delay: int = DEFAULT_AUDIO_DELAY_FRAMES  # frames; TTS on a Moshi-architecture LM
    voices_dir: str | None = None  # voices of a Kyutai TTS checkpoint
    builtin_preset: str = "tiny"  # which built-in models stand in without a checkpoint

    @property
    def builtin(self) -> bool:
        return self.hf_repo is None and self.mimi_checkpoint is None \
            and self.lm_checkpoint is None

    @property
    def builtin_lm(self) -> bool:
        return self.hf_repo is None and self.lm_checkpoint is None


def checkpoint_kind(cfg: LMConfig) -> str:
    """"tts" (a Kyutai TTS checkpoint: tts_config), "stt" (a Kyutai STT checkpoint: text only
    out, dep_q = 0) or "moshi" (generates text and audio: dialogue, and ASR / TTS by delays)."""
    if cfg.tts_config:
        return "tts"
    return "moshi" if cfg.dep_q else "stt"


def lm_kind(options: ModelOptions) -> str:
    """The kind of the LM ``options`` name (only its config is read)."""
    from services.moshi_lm.loader import load_config

    if options.builtin_lm:
        return "moshi"
    return checkpoint_kind(load_config(options.lm_checkpoint, options.hf_repo))


def load_mimi_model(options: ModelOptions):
    """Mimi from --mimi-checkpoint / --hf-repo, else the built-in tiny random one."""
    from services.mimi import build_random_mimi, load_mimi

    dtype = DTYPES[options.dtype]
    if options.mimi_checkpoint is None and options.hf_repo is None:
        _warn_random("Mimi")
        return build_random_mimi(options.builtin_preset, seed=BUILTIN_SEED,
                                 device=options.device, dtype=dtype)
    return load_mimi(options.mimi_checkpoint, options.hf_repo, device=options.device,
                     dtype=dtype)


def load_lm_model(options: ModelOptions):
    """(LMModel, its name, its text tokenizer or None) from --lm-checkpoint / --hf-repo, else
    the built-in tiny random LM in the Moshi layout (no tokenizer)."""
    from services.moshi_lm.config import preset
    from services.moshi_lm.loader import load_lm, prepare_for_inference
    from services.moshi_lm.model import LMModel

    checkpoint, repo = options.lm_checkpoint, options.hf_repo
    if options.builtin_lm:
        _warn_random("Moshi LM")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BUILTIN_SEED)
            model = prepare_for_inference(LMModel(preset(options.builtin_preset)))
        return model.to(options.device), f"builtin-{options.builtin_preset}-random", None
    model = load_lm(checkpoint, repo, dtype=DTYPES[options.dtype], device=options.device)
    return model, str(checkpoint or repo), text_tokenizer(model.cfg, checkpoint, repo)


def build_mimi_service(options: ModelOptions):
    from services.mimi.service import MimiService

    # As many encoding and decoding streams as LM sessions: a dialogue holds one of each, an
    # ASR session an encoder, a TTS session a decoder.
    return MimiService.create(load_mimi_model(options), options.max_sessions,
                              options.idle_timeout, options.batch_window)


def build_lm_service(options: ModelOptions, delay_shift: int = 0
                     ) -> tuple[MoshiLMService, TextTokenizer | None]:
    """(MoshiLMService, the LM's text tokenizer or None). ``delay_shift``: how far past the
    checkpoint's delays its engine's sessions may go (the ASR / TTS delays)."""
    from services.moshi_lm.generate import LMGenerator
    from services.moshi_lm.service import MoshiLMService

    model, name, tokenizer = load_lm_model(options)
    service = MoshiLMService.create(
        LMGenerator(model), name, options.max_sessions,
        tokenizer.pieces if tokenizer is not None else None, options.idle_timeout,
        options.batch_window, max_delay=model.cfg.max_delay + delay_shift)
    return service, tokenizer


def text_tokenizer(cfg: LMConfig, checkpoint: str | None, hf_repo: str | None
                   ) -> TextTokenizer | None:
    """The checkpoint's text tokenizer; None without a usable one."""
    from services.core.checkpoint import CheckpointError
    from services.moshi_lm.tokenizer import TextTokenizer

    try:
        return TextTokenizer.for_checkpoint(cfg, checkpoint, hf_repo)
    except (OSError, CheckpointError) as e:  # OSError: file missing locally or on the hub
        log.warning("no usable text tokenizer (%s): text pieces will be empty", e)
        return None


def build_speech_services(names: Sequence[str], lm: MoshiLMService, codec: MimiService,
                          tokenizer: TextTokenizer | None, options: ModelOptions
                          ) -> dict[str, GrpcService]:
    """ASR and / or TTS sessions on the Moshi-architecture LM's own engine (next to its
    dialogue sessions), each with its own delay; the user's streams get Mimi's silence."""
    from services.asr.service import ASRService
    from services.core.constants import FRAME_SIZE
    from services.core.engine import run_session
    from services.tts.loading import ByteTokenizer
    from services.tts.service import TTSService

    if options.builtin_lm:
        words = ByteTokenizer()  # the built-in random LM has no SentencePiece model
        decode = words.decode
    elif tokenizer is None:
        raise click.UsageError("ASR and TTS need the LM's text tokenizer (see the warning "
                               "above); serve without them: --services mimi,lm,dialogue")
    else:
        words, decode = tokenizer, tokenizer.display
    cfg = lm.cfg
    silence = run_session(codec.open_encoder(cfg.num_input_codebooks),
                          [np.zeros(FRAME_SIZE, np.float32)])[0]
    services: dict[str, GrpcService] = {}
    if "asr" in names:
        services["asr"] = ASRService.on_lm_engine(lm.engine, cfg, decode, codec, lm.model_name,
                                                  options.asr_text_delay, silence)
    if "tts" in names:
        services["tts"] = TTSService.on_lm_engine(lm.engine, cfg, words, codec, lm.model_name,
                                                  options.tts_audio_delay, silence)
    return services


def build_checkpoint_speech_service(kind: str, options: ModelOptions) -> list[GrpcService]:
    """A Kyutai STT / TTS checkpoint's own service (its own engine) and the codec its config
    names, served as the Mimi service."""
    from cli.asr import build_asr_service
    from cli.tts import build_tts_service

    if options.mimi_checkpoint is not None:
        raise click.UsageError("--mimi-checkpoint: a Kyutai STT / TTS checkpoint runs with "
                               "the codec its config names")
    common = dict(max_sessions=options.max_sessions, device=options.device,
                  dtype=DTYPES[options.dtype], idle_timeout=options.idle_timeout)
    if kind == "stt":
        service, codec = build_asr_service(options.lm_checkpoint, options.hf_repo, **common)
    else:
        service, codec = build_tts_service(options.lm_checkpoint, options.hf_repo,
                                           voices_dir=options.voices_dir, **common)
    return [codec, service]


def build_services(names: Sequence[str] | None, options: ModelOptions,
                   mimi_address: str | None = None, lm_address: str | None = None,
                   token: str | None = None) -> list[GrpcService]:
    """The services ``names`` (None: every one the LM supports, see SUPPORTED) and the
    in-process ones they run on. The dialogue uses the in-process codec and LM unless given
    addresses (and then loads no model of its own); ASR and TTS always run on the
    in-process LM's engine."""
    from services.dialogue.service import DialogueService

    kind = lm_kind(options)
    names = SUPPORTED[kind] if names is None else names
    if unsupported := [n for n in names if n not in SUPPORTED[kind]]:
        raise click.UsageError(f"a Kyutai {kind.upper()} checkpoint serves "
                               f"{', '.join(SUPPORTED[kind])}, not {', '.join(unsupported)}")
    if kind != "moshi":
        return build_checkpoint_speech_service(kind, options)
    speech = [n for n in ("asr", "tts") if n in names]
    services: dict[str, GrpcService] = {}
    tokenizer = None
    if "mimi" in names or speech or ("dialogue" in names and mimi_address is None):
        services["mimi"] = build_mimi_service(options)
    if "lm" in names or speech or ("dialogue" in names and lm_address is None):
        shift = max(options.asr_text_delay if "asr" in names else 0,
                    options.tts_audio_delay if "tts" in names else 0)
        services["lm"], tokenizer = build_lm_service(options, shift)
    if "dialogue" in names:
        codec, codec_where = services.get("mimi"), "in-process"
        lm, lm_where = services.get("lm"), "in-process"
        if mimi_address is not None:
            from services.mimi.client import RemoteMimi

            codec, codec_where = RemoteMimi(create_channel(mimi_address), token), mimi_address
        if lm_address is not None:
            from services.moshi_lm.client import RemoteLM

            lm, lm_where = RemoteLM(create_channel(lm_address), token), lm_address
        services["dialogue"] = DialogueService(codec, lm, codec_where, lm_where)
    if speech:
        services.update(build_speech_services(speech, services["lm"], services["mimi"],
                                              tokenizer, options))
    return list(services.values())


def _warn_random(what: str) -> None:
    click.echo(f"warning: no checkpoint given, serving a built-in tiny random {what}: its "
               "output is not meaningful (use --hf-repo or a checkpoint)", err=True)


def _parse_services(value: str | None) -> list[str] | None:
    if value is None:
        return None  # every service the LM supports
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ALL_SERVICES))
    if unknown or not names:
        raise click.BadParameter(f"unknown service(s) {unknown}; choose from "
                                 f"{', '.join(ALL_SERVICES)}")
    return names


def model_options(f):
    """The model-source options shared by ``serve`` and ``dialogue``."""
    for decorator in reversed([
        click.option("--hf-repo", help="Hugging Face repository holding Mimi and the LM "
                     "(e.g. kyutai/moshiko-pytorch-bf16)."),
        click.option("--mimi-checkpoint", type=click.Path(exists=True),
                     help="Local Mimi safetensors file (overrides --hf-repo for Mimi)."),
        click.option("--lm-checkpoint", type=click.Path(exists=True),
                     help="Local LM folder (config.json + model.safetensors) or file."),
        click.option("--device", default="cpu", show_default=True),
        click.option("--dtype", type=click.Choice(sorted(DTYPES)), default="float32",
                     show_default=True),
        click.option("--threads", type=click.IntRange(1), default=None,
                     help="torch intra-op threads (default: torch's choice)."),
    ]):
        f = decorator(f)
    return f


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on ('0.0.0.0' or '[::]' for every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=50051, show_default=True,
              help="0 picks a free port (printed).")
@click.option("--services", "service_list",
              help="Comma-separated subset of: " + ", ".join(ALL_SERVICES) + ". Default: "
              "every service the LM supports (all of them; a Kyutai STT checkpoint: mimi, asr; "
              "a Kyutai TTS checkpoint: mimi, tts). The Mimi and LM services that ASR, TTS or "
              "an in-process dialogue run on are served too.")
@model_options
@click.option("--max-sessions", type=click.IntRange(1), default=8, show_default=True,
              help="Concurrent streams per model: dialogue, LM, ASR and TTS streams share "
              "the LM's slots; for Mimi as many encoding and as many decoding streams.")
@click.option("--idle-timeout", type=click.FloatRange(min=0.1), default=30.0,
              show_default=True, help="Seconds without traffic before a stream is closed.")
@click.option("--batch-window-ms", type=click.FloatRange(min=0), default=10.0,
              show_default=True, help="How long a step may wait for the other sessions' "
              "frames once one has arrived: fuller batches, fewer steps under load.")
@click.option("--asr-text-delay", type=click.IntRange(1), default=DEFAULT_TEXT_DELAY_FRAMES,
              show_default=True, help="ASR on a Moshi-architecture LM: frames (80 ms each) "
              "the text lags the audio (25 = 2 s, the Moshi paper's setting); longer: better "
              "words, later. A Kyutai STT checkpoint has its own.")
@click.option("--tts-audio-delay", type=click.IntRange(1), default=DEFAULT_AUDIO_DELAY_FRAMES,
              show_default=True, help="TTS on a Moshi-architecture LM: frames (80 ms each) "
              "the audio lags the text it speaks (25 = 2 s, the Moshi paper's setting). A "
              "Kyutai TTS checkpoint has its own.")
@click.option("--voices-dir", type=click.Path(exists=True, file_okay=False),
              help="Kyutai TTS checkpoint: the voices folder (e.g. a kyutai/tts-voices "
              "download); its first voice is the default.")
@click.option("--builtin", "builtin_preset", type=click.Choice(BUILTIN_PRESETS),
              default="tiny", show_default=True,
              help="Without a checkpoint: the built-in random models to serve ('null': "
              "near-zero-cost models, for benchmarking the server itself).")
@click.option("--mimi-address", help="Dialogue: use the Mimi service at this address.")
@click.option("--lm-address", help="Dialogue: use the LM service at this address.")
@click.option("--auth-token", envvar="MOSHI_SERVICES_TOKEN",
              help="Require 'authorization: Bearer TOKEN' (env MOSHI_SERVICES_TOKEN); also "
              "sent to --mimi-address / --lm-address.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="PEM certificate chain: serve TLS (with --tls-key).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False))
@click.option("--grace", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Seconds running streams get to finish on shutdown.")
def serve(host, port, service_list, hf_repo, mimi_checkpoint, lm_checkpoint, device, dtype,
          threads, max_sessions, idle_timeout, batch_window_ms, asr_text_delay,
          tts_audio_delay, voices_dir, builtin_preset, mimi_address, lm_address, auth_token,
          tls_cert, tls_key, grace) -> None:
    """Serve Mimi, the Moshi LM, full-duplex dialogue, ASR and TTS over gRPC (health,
    reflection, stats: services.core.EngineStats/GetStats). A Moshi-architecture LM runs
    dialogue, ASR and TTS sessions in one batched engine, each with its own delays."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if threads:
        torch.set_num_threads(threads)
    names = _parse_services(service_list)
    options = ModelOptions(hf_repo, mimi_checkpoint, lm_checkpoint, device, dtype,
                           max_sessions, idle_timeout, batch_window_ms / 1000, asr_text_delay,
                           tts_audio_delay, voices_dir, builtin_preset)
    services = build_services(names, options, mimi_address, lm_address, auth_token)
    server_options = ServerOptions(
        auth_token=auth_token,
        tls_cert_chain=Path(tls_cert).read_bytes() if tls_cert else None,
        tls_private_key=Path(tls_key).read_bytes() if tls_key else None)
    health_servicer = health.HealthServicer()
    server, bound = create_server(services, f"{host}:{port}", server_options, health_servicer,
                                  warm_up=False)
    click.echo(f"listening on {host}:{bound} ({', '.join(s.name for s in services)}); "
               "warming up", err=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    for service in services:
        service.warm_up()
    set_health(health_servicer, services, serving=True)
    click.echo("serving", err=True)
    while not stop.wait(0.5):  # a timed wait lets the signal handlers run
        pass
    click.echo(f"shutting down (grace {grace:g} s)", err=True)
    set_health(health_servicer, services, serving=False)
    server.stop(grace).wait()
    for service in services:
        service.close()
