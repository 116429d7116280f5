"""The README's examples run as written against a real server; only the port differs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from omni.flags import build_parser
from tests.http.servers import REPO_ROOT

README = REPO_ROOT / "README.md"
CI_SCRIPT = REPO_ROOT / ".ci" / "run"
README_URL = "http://localhost:8000"
CODE_BLOCK = re.compile(r"^```(?P<language>\w*)\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(language: str) -> list[str]:
    blocks = CODE_BLOCK.finditer(README.read_text())
    return [b["code"] for b in blocks if b["language"] == language]


def examples(language: str) -> list[str]:
    return [code for code in code_blocks(language) if f"{README_URL}/v1" in code]


def run_example(command: list[str], url: str, cwd: Path) -> list[Image.Image]:
    """Run one example in an empty directory; the PNG files it wrote, opened."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [part.replace(README_URL, url) for part in command]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    images = [Image.open(path) for path in sorted(cwd.glob("*.png"))]
    assert images, f"the example wrote no PNG file: {result.stdout} {result.stderr}"
    return images


def test_readme_has_a_curl_and_two_python_examples() -> None:
    assert len(examples("bash")) == 1
    assert len(examples("python")) == 2


def test_the_curl_example_writes_a_png(url: str, tmp_path: Path) -> None:
    [curl] = examples("bash")

    [image] = run_example(["bash", "-euo", "pipefail", "-c", curl], url, tmp_path)

    assert (image.format, image.size) == ("PNG", (64, 64))


@pytest.mark.parametrize("index", [0, 1])
def test_the_python_examples_write_pngs(url: str, tmp_path: Path, index: int) -> None:
    code = examples("python")[index]

    images = run_example([sys.executable, "-c", code], url, tmp_path)

    assert all((image.format, image.size) == ("PNG", (64, 64)) for image in images)


def test_ci_runs_the_readme_install_and_test_commands() -> None:
    install_and_serve, test = code_blocks("bash")[:2]
    install = install_and_serve.strip().removesuffix("&& python -m omni.serve").strip()
    ci_script = CI_SCRIPT.read_text()

    assert install_and_serve.strip().endswith("python -m omni.serve")
    assert install in ci_script
    assert test.strip() in ci_script
    assert os.access(CI_SCRIPT, os.X_OK)


def test_the_flags_table_lists_every_flag() -> None:
    flags = {o for a in build_parser()._actions for o in a.option_strings if o.startswith("--")}
    documented = set(re.findall(r"^\| `(--[a-z0-9-]+)` \|", README.read_text(), re.MULTILINE))

    assert documented == flags - {"--help"}
