"""``moshi-services serve``: the gRPC services on one port, each model loaded once.

    moshi-services serve                                  # built-in tiny random models
    moshi-services serve --hf-repo kyutai/moshiko-pytorch-bf16 --port 50051
    moshi-services serve --services dialogue --mimi-address h1:50051 --lm-address h2:50051

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

import click
import torch
from grpc_health.v1 import health

from services.core.grpc_server import (
    GrpcService,
    ServerOptions,
    create_channel,
    create_server,
    set_health,
)

log = logging.getLogger("moshi-services.serve")

ALL_SERVICES = ("mimi", "lm", "dialogue")
BUILTIN_SEED = 0  # every process builds the same random weights: separate servers agree
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """Where the models come from; nothing given: the built-in tiny random models."""

    hf_repo: str | None = None
    mimi_checkpoint: str | None = None
    lm_checkpoint: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    max_sessions: int = 8
    idle_timeout: float = 30.0
    batch_window: float = 0.0  # seconds; see services.core.engine.Engine

    @property
    def builtin(self) -> bool:
        return self.hf_repo is None and self.mimi_checkpoint is None \
            and self.lm_checkpoint is None


def load_mimi_model(options: ModelOptions):
    """Mimi from --mimi-checkpoint / --hf-repo, else the built-in tiny random one."""
    from services.mimi import build_random_mimi, load_mimi

    dtype = DTYPES[options.dtype]
    if options.mimi_checkpoint is None and options.hf_repo is None:
        _warn_random("Mimi")
        return build_random_mimi(seed=BUILTIN_SEED, device=options.device, dtype=dtype)
    return load_mimi(options.mimi_checkpoint, options.hf_repo, device=options.device,
                     dtype=dtype)


def load_lm_model(options: ModelOptions):
    """(LMModel, its name, display text of each text token or None) from --lm-checkpoint /
    --hf-repo, else the built-in tiny random LM in the Moshi layout."""
    from services.moshi_lm.config import preset
    from services.moshi_lm.loader import load_lm, prepare_for_inference
    from services.moshi_lm.model import LMModel

    checkpoint, repo = options.lm_checkpoint, options.hf_repo
    if checkpoint is None and repo is None:
        _warn_random("Moshi LM")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BUILTIN_SEED)
            model = prepare_for_inference(LMModel(preset("tiny")))
        return model.to(options.device), "builtin-tiny-random", None
    model = load_lm(checkpoint, repo, dtype=DTYPES[options.dtype], device=options.device)
    return model, str(checkpoint or repo), text_pieces(model.cfg, checkpoint, repo)


def build_mimi_service(options: ModelOptions):
    from services.mimi.service import MimiService

    # As many encoding and decoding streams as dialogues: a dialogue holds one of each.
    return MimiService.create(load_mimi_model(options), options.max_sessions,
                              options.idle_timeout, options.batch_window)


def build_lm_service(options: ModelOptions):
    from services.moshi_lm.generate import LMGenerator
    from services.moshi_lm.service import MoshiLMService

    model, name, pieces = load_lm_model(options)
    return MoshiLMService.create(LMGenerator(model), name, options.max_sessions, pieces,
                                 options.idle_timeout, options.batch_window)


def text_pieces(cfg, checkpoint: str | None, hf_repo: str | None) -> list[str] | None:
    """Display text of every text token (the checkpoint's tokenizer); None without one."""
    from services.core.checkpoint import CheckpointError
    from services.moshi_lm.tokenizer import TextTokenizer

    try:
        return TextTokenizer.for_checkpoint(cfg, checkpoint, hf_repo).pieces
    except (OSError, CheckpointError) as e:  # OSError: file missing locally or on the hub
        log.warning("no usable text tokenizer (%s): text pieces will be empty", e)
        return None


def build_services(names: Sequence[str], options: ModelOptions, mimi_address: str | None = None,
                   lm_address: str | None = None, token: str | None = None
                   ) -> list[GrpcService]:
    """The services ``names``; the dialogue uses the in-process codec and LM unless given
    addresses (and then loads no model of its own)."""
    from services.dialogue.service import DialogueService

    services: dict[str, GrpcService] = {}
    if "mimi" in names or ("dialogue" in names and mimi_address is None):
        services["mimi"] = build_mimi_service(options)
    if "lm" in names or ("dialogue" in names and lm_address is None):
        services["lm"] = build_lm_service(options)
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
    return list(services.values())


def _warn_random(what: str) -> None:
    click.echo(f"warning: no checkpoint given, serving a built-in tiny random {what}: its "
               "output is not meaningful (use --hf-repo or a checkpoint)", err=True)


def _parse_services(value: str) -> list[str]:
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
@click.option("--services", "service_list", default=",".join(ALL_SERVICES), show_default=True,
              help="Comma-separated subset of: " + ", ".join(ALL_SERVICES))
@model_options
@click.option("--max-sessions", type=click.IntRange(1), default=8, show_default=True,
              help="Concurrent streams per model: dialogues and LM streams; for Mimi as "
              "many encoding and as many decoding streams (a dialogue holds one of each).")
@click.option("--idle-timeout", type=click.FloatRange(min=0.1), default=30.0,
              show_default=True, help="Seconds without traffic before a stream is closed.")
@click.option("--batch-window-ms", type=click.FloatRange(min=0), default=10.0,
              show_default=True, help="How long a step may wait for the other sessions' "
              "frames once one has arrived: fuller batches, fewer steps under load.")
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
          threads, max_sessions, idle_timeout, batch_window_ms, mimi_address, lm_address,
          auth_token, tls_cert, tls_key, grace) -> None:
    """Serve Mimi, the Moshi LM and full-duplex dialogue over gRPC (health, reflection,
    stats: services.core.EngineStats/GetStats)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if threads:
        torch.set_num_threads(threads)
    names = _parse_services(service_list)
    options = ModelOptions(hf_repo, mimi_checkpoint, lm_checkpoint, device, dtype,
                           max_sessions, idle_timeout, batch_window_ms / 1000)
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
