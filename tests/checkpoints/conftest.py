"""The checkpoint tests' shared set-up: an S3 server on loopback (moto), once per session.

The S3 tests skip when moto or s3fs is missing (they fail instead when ``CI`` is set).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

#: The bucket the S3 server holds.
BUCKET = "genepool-tests"


# -- the S3 server on loopback ---------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_options() -> Iterator[dict[str, Any]]:
    """storage_options of a moto S3 server on 127.0.0.1 (one per session) with a bucket."""
    try:
        import s3fs  # noqa: F401
        from moto.server import ThreadedMotoServer
    except ImportError as err:
        reason = f"the S3 tests need moto[server] and s3fs ({err}): pip install -e '.[dev]'"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        options: dict[str, Any] = {
            "endpoint_url": f"http://{host}:{port}",
            "key": "testing",
            "secret": "testing",
        }
        import fsspec

        fsspec.filesystem("s3", **options).mkdir(BUCKET)
        yield options
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    """The S3 server as the environment names it (for a plain URL); its endpoint."""
    endpoint = str(s3_options["endpoint_url"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return endpoint
