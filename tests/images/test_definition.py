"""kind/Dockerfile and the daemonless build (images/definition.py) describe the same
images: base packages, user, entrypoint, environment, lock file, Python path."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

from images import definition, pylayers

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "kind" / "Dockerfile"


def parse_dockerfile(text: str) -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage name: {stage: [(INSTRUCTION, arguments), ...]}."""
    stages: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        instruction, _, args = logical.partition(" ")
        logical = ""
        instruction = instruction.upper()
        if instruction == "FROM":
            words = args.split()
            current = words[2] if len(words) == 3 and words[1].upper() == "AS" else words[0]
            stages[current] = [("FROM", words[0])]
            continue
        stages[current].append((instruction, " ".join(args.split())))
    return stages


STAGES = parse_dockerfile(DOCKERFILE.read_text())


def last(stage: str, instruction: str) -> str:
    return [a for i, a in STAGES[stage] if i == instruction][-1]


def env_of(stage: str) -> tuple[str, ...]:
    pairs: list[str] = []
    for instruction, args in STAGES[stage]:
        if instruction == "ENV":
            pairs += args.split()
    return tuple(pairs)


def runs(stage: str) -> str:
    return " ".join(a for i, a in STAGES[stage] if i == "RUN")


def image_stages() -> dict[str, str]:
    return {
        definition.PALISADE.name: "palisade",
        definition.EXAMPLE_MCP.name: "example-mcp",
        definition.KUBE_MCP.name: "kubernetes-mcp",
    }


class TestTheDockerfileStatesTheDefinition:
    def test_the_default_target_is_the_palisade_image(self) -> None:
        assert list(STAGES)[-1] == "palisade"

    def test_the_base_is_debian_of_the_suite_with_the_same_packages(self) -> None:
        assert STAGES["base"][0] == ("FROM", f"debian:{definition.SUITE}-slim")
        install = re.search(r"apt-get install -y --no-install-recommends ([^&]+)", runs("base"))
        assert install is not None
        assert sorted(install.group(1).split()) == sorted(definition.PACKAGES)

    def test_the_user_is_the_definitions_and_exists_in_the_base(self) -> None:
        uid, _, gid = definition.USER.partition(":")
        base = runs("base")
        assert f"groupadd --gid {gid} nonroot" in base
        assert f"useradd --uid {uid} --gid {gid} --home-dir /home/nonroot" in base
        for stage in image_stages().values():
            assert last(stage, "USER") == definition.USER

    def test_entrypoints_cmd_workdir_and_env_agree(self) -> None:
        for spec in definition.IMAGES:
            stage = image_stages()[spec.name]
            assert json.loads(last(stage, "ENTRYPOINT")) == list(spec.entrypoint)
            cmds = [json.loads(a) for i, a in STAGES[stage] if i == "CMD"]
            assert (cmds[-1] if cmds else []) == list(spec.cmd)
            assert last(stage, "WORKDIR") == definition.WORKDIR
            assert env_of(stage) == definition.ENV

    def test_the_lock_file_is_installed_with_hashes_into_the_same_python_path(self) -> None:
        deps = runs("deps")
        assert ("COPY", f"{definition.LOCK_FILE} /tmp/requirements.lock") in STAGES["deps"]
        assert "-r /tmp/requirements.lock" in deps
        for flag in definition.PIP_TARGET_FLAGS:
            assert flag in deps
        assert f"--target /out{definition.SITE_PACKAGES}" in deps
        for stage in ("deps", "app"):
            compile_flags = " ".join(definition.COMPILE_FLAGS)
            assert f"python3 -m compileall {compile_flags}" in runs(stage)

    def test_the_app_is_the_wheel_of_the_same_sources_plus_the_entry_script(self) -> None:
        copied = {src for i, a in STAGES["app"] if i == "COPY" for src in a.split()[:-1]}
        assert copied == set(pylayers.WHEEL_SOURCES)
        assert f"--target /out{definition.SITE_PACKAGES} /wheels/*.whl" in runs("app")
        assert ("COPY", f"images/files/palisade {definition.ENTRY_SCRIPT}") in STAGES["palisade"]

    def test_both_images_carry_the_examples_where_the_definition_puts_them(self) -> None:
        for spec in definition.IMAGES:
            stage = STAGES[image_stages()[spec.name]]
            copied = ("COPY", f"examples/mcp_servers {definition.EXAMPLES_DIR}") in stage
            assert copied == ("examples" in spec.layers)

    def test_the_layers_stack_in_the_definitions_order(self) -> None:
        sources = {"deps": "--from=deps /out/ /", "app": "--from=app /out/ /"}
        sources["kube-mcp"] = "--from=kube-mcp /out/ /"
        sources["examples"] = f"examples/mcp_servers {definition.EXAMPLES_DIR}"
        for spec in definition.IMAGES:
            copies = [a for i, a in STAGES[image_stages()[spec.name]] if i == "COPY"]
            stacked = [name for c in copies for name, src in sources.items() if c == src]
            assert stacked == list(spec.layers)


class TestVersionsAgree:
    def test_the_chart_default_image_is_palisade_at_the_project_version(self) -> None:
        version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
        chart = yaml.safe_load((REPO / "charts/palisade/Chart.yaml").read_text())
        values = yaml.safe_load((REPO / "charts/palisade/values.yaml").read_text())
        assert chart["appVersion"] == version
        assert values["image"]["repository"] == definition.PALISADE.name
        assert values["image"]["tag"] in ("", version)

    def test_the_entry_script_runs_the_console_script_of_pyproject(self) -> None:
        scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
        module, _, func = scripts["palisade"].partition(":")
        text = (REPO / "images/files/palisade").read_text()
        assert text.startswith("#!/usr/bin/python3\n")
        assert f"from {module} import {func}" in text


class TestTheLockFile:
    def test_every_requirement_is_pinned_with_hashes(self) -> None:
        text = (REPO / definition.LOCK_FILE).read_text()
        requirements = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
        assert len(requirements) > 20
        for requirement in requirements:
            assert re.match(r"^[A-Za-z0-9_.\-\[\]]+==\S+ \\\n", requirement), requirement
            assert "--hash=sha256:" in requirement, requirement

    def test_it_covers_the_project_dependencies_and_not_the_dev_extras(self) -> None:
        project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
        pinned = {
            m.group(1).lower().replace("_", "-")
            for m in re.finditer(
                r"^([A-Za-z0-9_.\-]+)==", (REPO / definition.LOCK_FILE).read_text(), re.M
            )
        }

        def name(spec: str) -> str:
            return re.split(r"[<>=;\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-")

        assert {name(d) for d in project["dependencies"]} <= pinned
        assert not {name(d) for d in project["optional-dependencies"]["dev"]} & pinned
