"""``--version``, shell completion checked in a real bash, one name per command, exit codes."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from palisade.cli.completion import command_tree
from palisade.cli.main import COMMANDS, main, top_parser


def test_version_comes_from_the_installed_package(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"palisade {version('palisade')}"


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "palisade.cli.main", "completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    path = tmp_path_factory.mktemp("completion") / "palisade.bash"
    path.write_text(done.stdout)
    return path


def test_the_bash_completion_script_is_valid_bash(bash_script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(bash_script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def complete(script: Path, *words: str) -> list[str]:
    """What a real bash offers for the command line ``words`` (the last is being typed)."""
    line = " ".join(f"'{w}'" for w in ("palisade", *words))
    program = (
        f"source '{script}'\n"
        f"COMP_WORDS=({line})\n"
        f"COMP_CWORD={len(words)}\n"
        "_palisade\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
        "complete -p palisade\n"
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    *offered, registered = done.stdout.splitlines()
    assert registered == "complete -o default -F _palisade palisade"
    return offered


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("fl",), ["fleet"]),
        (("a",), ["audit", "approvals"]),
        (("audit", "q"), ["query"]),
        (("fleet", "s"), ["sidecars"]),
        (("approvals", "sh"), ["show"]),
        (("fleet", "sidecars", "-o", ""), ["table", "wide", "json", "yaml"]),
        (("audit", "show", "x.jsonl", "--output", "j"), ["json", "jsonl"]),
        (("completion", ""), ["-h", "--help"]),
        (("fleet", "nodes", "--a"), ["--all"]),
    ],
)
def test_bash_completes_subcommands_options_and_their_values(
    bash_script: Path, words: tuple[str, ...], expected: list[str]
) -> None:
    assert sorted(complete(bash_script, *words)) == sorted(expected)


def test_zsh_and_fish_scripts_carry_the_same_tree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "zsh"]) == 0
    zsh = capsys.readouterr().out
    assert zsh.startswith("#compdef palisade") and "bashcompinit" in zsh
    assert main(["completion", "fish"]) == 0
    fish = capsys.readouterr().out
    assert "complete -c palisade -n '__palisade_at \\'fleet\\'' -a 'sidecars nodes" in fish
    assert "-l output -x -a 'table wide json yaml'" in fish
    with pytest.raises(SystemExit) as exc:
        main(["completion", "powershell"])
    assert exc.value.code == 2


def test_audit_query_has_one_name() -> None:
    tree = command_tree(COMMANDS, top_parser())
    assert "query" in tree["audit"].subcommands
    assert "audit-query" not in tree[""].subcommands
    assert not [path for path in tree if "audit-query" in path]


def test_the_old_audit_query_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["audit-query", "--agent", "x"])
    assert exc.value.code == 2
    assert "unknown command 'audit-query'" in capsys.readouterr().err


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palisade.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("fleet", "--url", "http://127.0.0.1:9"), 1, "cannot reach the distributor"),
        (("approvals", "list", "--url", "http://127.0.0.1:9"), 1, "cannot reach"),
        (("audit", "query", "--since", "soon", "--url", "http://127.0.0.1:9"), 2, "not a time"),
        (("fleet", "--token-file", "/nonexistent/token"), 2, "cannot read --token-file"),
        (("fleet", "-o", "xml"), 2, "invalid choice: 'xml'"),
        (("fleet", "--kubeconfig", "/nonexistent/kubeconfig"), 1, "kubeconfig"),
        (("approvals", "approve", "apr-1", "--kubeconfig", "/nonexistent/kc"), 2, "kubeconfig"),
        (("nodeagent", "nope"), 2, "invalid choice"),
    ],
)
def test_failures_are_one_clear_line_with_the_documented_exit_code(
    args: tuple[str, ...], code: int, message: str
) -> None:
    done = _cli(*args)
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
