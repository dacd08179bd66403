"""docker-compose.yml is valid (checked with the real docker-compose where installed)."""

import shutil
import subprocess

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed (apt-get install docker-compose)")
def test_compose_file_validates():
    result = subprocess.run(["docker-compose", "config"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    config = result.stdout
    assert "qdrant_storage" in config and "healthcheck" in config
    assert "RAG_QDRANT_URL: http://qdrant:6333" in config
    # The app and Qdrant are published on loopback only by default.
    assert "127.0.0.1" in config
