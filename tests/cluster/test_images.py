"""The images and skaffold.yaml, without a Docker engine: hadolint, and what must agree with the
chart (targets, user, entry point, FFmpeg only where compiles run, the build context)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.helpers import CHART, REPO

DOCKERFILE = REPO / "docker" / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not os.access(found, os.X_OK):
        pytest.skip("hadolint is not installed (pip install -r tests/cluster/requirements.txt)")
    return found


def stages() -> dict[str, list[str]]:
    """Stage name → its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if match:
            current = match.group(2) or match.group(1)
            result[current] = [line]
        elif current:
            result[current].append(line)
    return result


def instructions(stage: str, inherited: bool = True) -> list[str]:
    """A stage's instructions after those of the stages it is built FROM."""
    all_stages = stages()
    lines = all_stages[stage]
    base = lines[0].split()[1]
    if inherited and base in all_stages:
        return [*instructions(base), *lines[1:]]
    return lines


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install ffmpeg\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout


@pytest.mark.parametrize("target", ["service", "compile"])
def test_final_images_run_tapedeck_as_non_root(target: str) -> None:
    lines = instructions(target)
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    assert users and users[-1] == "10001:10001"
    entry = [line for line in lines if line.upper().startswith("ENTRYPOINT")]
    assert entry[-1] == 'ENTRYPOINT ["tapedeck"]'
    # The chart runs the same uid.
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert "runAsUser: 10001" in helpers


def test_ffmpeg_only_in_the_compile_image() -> None:
    assert any("install" in line and "ffmpeg" in line for line in instructions("compile"))
    assert not any("ffmpeg" in line for line in instructions("service"))
    assert "ENV TAPEDECK_FFMPEG=/usr/bin/ffmpeg" in instructions("compile")


def test_no_build_tools_in_runtime_layers() -> None:
    for target in ("service", "compile"):
        copies = [line for line in instructions(target) if line.upper().startswith("COPY")]
        # Only artefacts of earlier stages go in: the venv and the UI, never the sources.
        assert all("--from=" in line for line in copies), copies
    assert any("/app/frontend" in line for line in instructions("service", inherited=False))


def test_build_context_has_what_the_build_copies() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("**") + 1 :]  # an allow-list after ignoring everything
    for line in [line for lines in stages().values() for line in lines]:
        match = re.match(r"COPY\s+(?!--from)(.+)\s+\S+$", line)
        if match:
            for src in match.group(1).split():
                top = src.split("/")[0]
                assert any(rule.lstrip("!").startswith(top) for rule in ignore), src


def skaffold() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    return config


def test_skaffold_builds_one_artifact_per_image() -> None:
    config = skaffold()
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert set(artifacts) == {"tapedeck", "tapedeck-compile"}
    for artifact in artifacts.values():
        assert artifact["docker"]["dockerfile"] == "docker/Dockerfile"
        assert artifact["docker"]["target"] in stages()


def test_skaffold_sets_the_chart_values() -> None:
    config = skaffold()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    release = config["deploy"]["helm"]["releases"][0]
    assert (REPO / release["chartPath"] / "Chart.yaml").exists()

    def has(path: str) -> bool:
        node: Any = values
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    templates = release["setValueTemplates"]
    for image in ("tapedeck", "tapedeck-compile"):
        var = image.replace("-", "_")
        assert f"{{{{.IMAGE_REPO_{var}}}}}" in templates.values()
    for key in templates:
        assert has(key), key
    dev = next(p for p in config["profiles"] if p["name"] == "dev")
    for patch in dev["patches"]:
        if patch["path"].endswith("/setValues"):
            for key in patch["value"]:
                assert has(key), key
        if patch["path"].endswith("/sync"):
            assert patch["value"]["manual"][0]["dest"] == "/app/frontend"
    for forward in config["portForward"]:
        assert forward["resourceName"] in ("tapedeck-api", "tapedeck-ingest")


def test_the_image_installs_what_cluster_mode_imports() -> None:
    """The service image gets the `cluster` extra and nothing else: whatever `tapedeck
    operator` and the api in cluster mode import must be in it, not only in a dev venv."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["cluster"]
    names = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in extra}
    for module in ("kopf", "kubernetes"):
        assert module in names, f"{module} is imported in cluster mode but not a dependency"


@pytest.mark.parametrize("target", ["service", "compile"])
def test_each_image_installs_its_own_lock_file_with_hashes(target: str) -> None:
    (copy,) = [
        line
        for line in instructions(target, inherited=False)
        if line.startswith("COPY --from=") and "/opt/tapedeck" in line
    ]
    venv = copy.split()[1].removeprefix("--from=")
    lines = instructions(venv)
    assert f"COPY requirements/{target}.txt requirements.txt" in lines
    (install,) = [line for line in lines if "-r requirements.txt" in line]
    assert "pip install --require-hashes -r requirements.txt" in install
    # Tapedeck itself goes in without dependencies (it has no hash); then pip goes out.
    project = next(line for line in lines if "/wheels/tapedeck-" in line)
    assert "--no-deps" in project and "pip uninstall --yes pip" in project


# What each image's venv leaves out, and the modules of the roles it runs (docker/Dockerfile,
# requirements/*.txt): a role importing a left-out package would crash only in the image.
LEFT_OUT = {
    "service": ("av", "imageio_ffmpeg"),
    "compile": ("kubernetes", "kopf", "imageio_ffmpeg"),
}
# Parts of installed packages the Dockerfile deletes from an image.
TRIMMED = {"service": ("kubernetes.aio",), "compile": ()}
ROLE_MODULES = {
    "service": (
        "tapedeck.cli",
        "tapedeck.webapp",
        "tapedeck.storage.server",
        "tapedeck.cluster.api",
        "tapedeck.cluster.kube",
        "tapedeck_operator.run",
        "tapedeck_operator.handlers",
    ),
    "compile": ("tapedeck.cli", "tapedeck.compiler.job", "tapedeck.compiler.follow"),
}


@pytest.mark.parametrize("image", ["service", "compile"])
def test_roles_import_without_what_their_image_leaves_out(image: str) -> None:
    blocked = ", ".join(repr(name) for name in (*LEFT_OUT[image], *TRIMMED[image]))
    program = (
        "import importlib, sys\n"
        f"for name in ({blocked},):\n"
        "    sys.modules[name] = None  # import raises ModuleNotFoundError\n"
        f"for module in {ROLE_MODULES[image]!r}:\n"
        "    importlib.import_module(module)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("image", ["service", "compile"])
def test_the_lock_leaves_out_what_the_image_does_not_need(image: str) -> None:
    pinned = {
        line.split("==")[0].lower()
        for line in (REPO / "requirements" / f"{image}.txt").read_text().splitlines()
        if re.match(r"[A-Za-z0-9]", line)
    }
    distributions = {"av": "av", "imageio_ffmpeg": "imageio-ffmpeg"}
    for module in LEFT_OUT[image]:
        assert distributions.get(module, module) not in pinned
    assert not pinned & {"pytest", "mypy", "ruff", "grpcio-tools", "playwright", "uv"}
