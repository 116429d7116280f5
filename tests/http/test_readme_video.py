"""The README's video examples run as written against a real server; only the port differs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.http.test_readme import code_blocks
from tests.test_media import decode

README_VIDEO_URL = "http://localhost:8001"


def video_examples(language: str) -> list[str]:
    return [code for code in code_blocks(language) if f"{README_VIDEO_URL}/v1" in code]


def run_example(command: list[str], url: str, cwd: Path) -> Path:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [part.replace(README_VIDEO_URL, url) for part in command]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    [mp4] = cwd.glob("*.mp4")
    return mp4


def test_readme_serves_the_video_model_on_the_examples_port() -> None:
    serve = "python -m omni.serve --model omni-tiny-video --port 8001"
    assert any(block.strip() == serve for block in code_blocks("bash"))
    assert len(video_examples("bash")) == 2 and len(video_examples("python")) == 2


@pytest.mark.parametrize(
    ("language", "index", "frames", "fps"),
    [
        ("bash", 0, 9, 8),  # 9 frames asked
        ("python", 0, 9, 8),  # 1 s at 8 fps = 8 frames, rounded to 9 (4k+1)
        ("bash", 1, 33, 32),  # frame interpolation: (9 - 1) * 2**2 + 1 at 8 * 2**2 fps
        ("python", 1, 17, 16),  # (9 - 1) * 2 + 1 at 8 * 2 fps
    ],
)
def test_the_video_examples_write_mp4s(
    video_url: str, tmp_path: Path, language, index, frames, fps
) -> None:
    code = video_examples(language)[index]
    command = (
        ["bash", "-euo", "pipefail", "-c", code]
        if language == "bash"
        else [sys.executable, "-c", code]
    )

    video = decode(run_example(command, video_url, tmp_path).read_bytes())

    assert (len(video.frames), video.fps, video.width, video.height) == (frames, fps, 32, 32)
