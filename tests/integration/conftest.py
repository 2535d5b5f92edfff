"""Emulated AWS for the integration tests: moto_server on loopback, one per test module."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / ".collections", ROOT / "tests" / "harness"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import loopback_moto  # noqa: E402  (needs the path above)


@pytest.fixture(scope="module")
def moto_url():
    with loopback_moto.running() as url:
        yield url


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch):
    for k, v in loopback_moto.CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
