"""``moshi-services``: one command for the whole project. Each subcommand lives in its own
module of this package and is registered here."""

from __future__ import annotations

import click

from cli.errors import Group


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="moshi-services")
def main() -> None:
    """Kyutai's Moshi model family (Mimi codec, Moshi LM, streaming ASR and TTS) from the
    command line and as streaming gRPC services."""


def _register() -> None:
    from cli import asr, dialogue, lm, mimi, serve, tts

    main.add_command(mimi.mimi)
    main.add_command(serve.serve)
    main.add_command(dialogue.dialogue)
    main.add_command(lm.lm)
    main.add_command(asr.asr)
    main.add_command(tts.tts)


_register()

if __name__ == "__main__":  # python3 -m cli.main, as the console script
    main()
