"""Errors a user can cause or meet, reported as one ``Error:`` line: exit status 2 for a usage
error (a flag, a path, an option that does not fit the model), 1 for a runtime one (a file
that cannot be read, a checkpoint that does not fit, a server that cannot be reached).

Every command of the CLI is a ``Command``: its callback runs inside ``reported_errors``.
Errors not listed there are bugs and keep their traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

RPC_HINTS = {
    "UNAVAILABLE": "is `moshi-services serve` running there? a TLS server needs --tls",
    "UNAUTHENTICATED": "give the server's token: --token or MOSHI_SERVICES_TOKEN",
    "UNIMPLEMENTED": "that server does not run this service (see its --services)",
    "DEADLINE_EXCEEDED": "the server did not answer in time",
}


def rpc_message(error, server: str | None) -> str:
    """One line for a failed gRPC call: where, what, and what to do."""
    code = error.code().name if error.code() is not None else "UNKNOWN"
    where = server or "the server"
    hint = RPC_HINTS.get(code)
    return f"{where}: {code}: {error.details()}" + (f" ({hint})" if hint else "")


@contextlib.contextmanager
def reported_errors(ctx: click.Context) -> Iterator[None]:
    """Turns the errors a user can meet into click's one-line errors. The modules are
    imported here, once a command runs, so ``--help`` does not pay for them."""
    import grpc
    import soundfile

    from services.core.checkpoint import CheckpointError, HubError
    from services.core.engine import EngineError, InvalidInput, Unsupported
    from services.core.grpc_server import BindError
    from services.mimi.codes_file import CodesFileError
    from services.wiring import OptionsError

    server = ctx.params.get("server")
    try:
        yield
    except (OptionsError, InvalidInput, Unsupported) as e:
        raise click.UsageError(str(e), ctx) from None
    except grpc.RpcError as e:
        raise click.ClickException(rpc_message(e, server)) from None
    except soundfile.LibsndfileError as e:
        raise click.ClickException(f"audio: {e}") from None
    except (BindError, CheckpointError, CodesFileError, HubError, EngineError) as e:
        raise click.ClickException(str(e)) from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise click.ClickException(f"{e.strerror}: {e.filename}" if e.filename else str(e)
                                   ) from None


class Command(click.Command):
    """A click command whose errors are reported by ``reported_errors``."""

    def invoke(self, ctx: click.Context):
        with reported_errors(ctx):
            return super().invoke(ctx)


class Group(click.Group):
    """A click group whose subcommands are ``Command``s."""

    command_class = Command
