"""Flags shared by the commands, spelled one way everywhere (older spellings stay as aliases:
they are documented interfaces), and the channel a client command opens from them.

Only click is imported here: ``--help`` must not pay for torch or grpc.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from services.wiring import DTYPES

QUANTIZE_MODES = ("int8", "int8-weight")  # services.moshi_lm.quantize (checked by a test)


def _apply(command: Callable, options: list) -> Callable:
    for option in reversed(options):
        command = option(command)
    return command


def run_options(command: Callable, lm: bool = True) -> Callable:
    """How a model runs: --device, --dtype, --threads and, for commands that run an LM,
    --quantize and --kv-dtype."""
    options = [
        click.option("--device", default="cpu", show_default=True,
                     help="torch device, e.g. cpu or cuda."),
        click.option("--dtype", type=click.Choice(DTYPES), default="float32",
                     show_default=True, help="Compute dtype, whatever the stored dtype."),
        click.option("--threads", type=click.IntRange(1), default=None,
                     help="torch intra-op threads (default: torch's choice; serve on CPU: one "
                     "fewer, at least 1, so gRPC keeps a core)."),
    ]
    if lm:
        options.append(click.option(
            "--quantize", type=click.Choice(QUANTIZE_MODES), default=None,
            help="CPU: int8 weights for the LM's temporal transformer; int8 = dynamic int8 "
                 "kernels (fastest from 2 sessions on), int8-weight = activations kept float "
                 "(as fast at 1 session, closer to float)."))
        options.append(click.option(
            "--kv-dtype", type=click.Choice(DTYPES), default=None,
            help="The LM's KV cache (default: --dtype). bfloat16 beside --dtype float32 "
                 "halves the bytes attention reads at every step (a long STT-1B session's "
                 "cache is 200 MB in float32); keys and values are rounded to bf16."))
    return _apply(command, options)


def client_options(command: Callable) -> Callable:
    """How a client command reaches a server: --server, --token, --tls, --ca-cert."""
    return _apply(command, [
        click.option("--server", metavar="ADDR",
                     help="Run through the service at ADDR (host:port) instead of in this "
                          "process."),
        click.option("--token", envvar="MOSHI_SERVICES_TOKEN",
                     help="Bearer token of the server (env MOSHI_SERVICES_TOKEN)."),
        click.option("--tls", is_flag=True, help="Connect with TLS (system roots)."),
        click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False),
                     help="PEM root certificate for TLS (implies --tls)."),
    ])


def open_channel(server: str, tls: bool = False, ca_cert: str | None = None):
    """A channel to ``server`` with the project's keepalive settings."""
    from services.core.grpc_server import create_channel

    root = Path(ca_cert).read_bytes() if ca_cert else None
    return create_channel(server, root, tls=tls)


def model_options(command: Callable) -> Callable:
    """Where a Mimi + LM pair comes from (``serve``, ``dialogue``) and how it runs."""
    command = run_options(command)
    return _apply(command, [
        click.option("--hf-repo", help="Hugging Face repository holding Mimi and the LM "
                     "(e.g. kyutai/moshiko-pytorch-bf16)."),
        click.option("--mimi-checkpoint", type=click.Path(exists=True),
                     help="Local Mimi safetensors file (overrides --hf-repo for Mimi)."),
        click.option("--lm-checkpoint", "--checkpoint", "lm_checkpoint",
                     type=click.Path(exists=True),
                     help="Local LM folder (config.json + model.safetensors) or file."),
    ])
