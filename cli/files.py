"""Checks on the files a command will write, made before any model loads: a command that is
going to fail on its output says so at once, not after the work."""

from __future__ import annotations

import os
from pathlib import Path

import click

STDOUT = "-"


def check_output(path: str, hint: str, allow_stdout: bool = False) -> None:
    """BadParameter (exit 2) unless ``path`` can be written: its folder exists and is
    writable, it is not a folder, an existing file is writable."""
    if path == STDOUT:
        if allow_stdout:
            return
        raise click.BadParameter("'-' (standard output) is not supported here: give a file "
                                 "name", param_hint=hint)
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise click.BadParameter(f"{path} is a folder", param_hint=hint)
    if not folder.is_dir():
        raise click.BadParameter(f"folder {folder} does not exist", param_hint=hint)
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists()
                                                   and not os.access(target, os.W_OK)):
        raise click.BadParameter(f"cannot write {path}: permission denied", param_hint=hint)


def check_audio_output(path: str, hint: str, allow_stdout: bool = False) -> None:
    """check_output, and the file's extension names a format the 16-bit writer writes
    (wav, flac, ...; not mp3 or ogg, whose encoders take no 16-bit PCM)."""
    check_output(path, hint, allow_stdout)
    if path == STDOUT:
        return
    import soundfile

    extension = Path(path).suffix.lstrip(".").upper()
    if not extension:
        raise click.BadParameter(f"{path}: give an extension (.wav)", param_hint=hint)
    if extension not in soundfile.available_formats() or not soundfile.check_format(
            extension, "PCM_16"):
        raise click.BadParameter(f"{path}: cannot write .{extension.lower()} audio; use .wav "
                                 "or .flac", param_hint=hint)
