"""Doc checks: the service names and flags the READMEs name are the ones that exist."""

import re
from pathlib import Path

from click.testing import CliRunner

from cli.main import main
from services.wiring import SERVICE_NAMES

REPO = Path(__file__).resolve().parents[1]
COMMANDS = (["mimi", "encode"], ["mimi", "decode"], ["lm", "generate"], ["asr"], ["tts"],
            ["dialogue"], ["serve"])


def test_every_service_name_in_the_readmes_is_served():
    served = set(SERVICE_NAMES.values()) | {"services.core.EngineStats"}
    for readme in (REPO / "README.md", REPO / "protos" / "README.md"):
        named = set(re.findall(r"`(services\.[a-z_]+\.[A-Z][A-Za-z]+)`", readme.read_text()))
        assert named and named <= served, (readme, named - served)
    table = (REPO / "protos" / "README.md").read_text()
    assert all(f"`{name}`" in table for name in SERVICE_NAMES.values())


def test_every_flag_in_the_readme_exists():
    helps = " ".join(CliRunner().invoke(main, [*c, "--help"]).output for c in COMMANDS)
    # Lines naming a benchmark script give that script's flags, checked against its own help;
    # lines naming a Riva client (its venv, NVIDIA's scripts) give that client's flags.
    text = "\n".join(line for line in (REPO / "README.md").read_text().splitlines()
                     if not any(name in line for name in ("bench/", "bench_", "riva-venv",
                                                          "scripts/")))
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", text))
    flags -= {"--index-url"}  # pip's
    missing = {f for f in flags if f not in helps}
    assert not missing, missing


def test_the_server_flag_is_where_the_readme_says():
    for command in (["mimi", "encode"], ["mimi", "decode"], ["asr"], ["tts"], ["dialogue"]):
        assert "--server" in CliRunner().invoke(main, [*command, "--help"]).output
    assert "--server" not in CliRunner().invoke(main, ["lm", "generate", "--help"]).output
