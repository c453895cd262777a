"""A real `lmlab serve` process on a free local port, shared by the serve tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, folder, *extra: str, log=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "lmlab.cli.main", "serve", "--model", str(folder),
               "--served-model-name", "smollm2", "--port", str(self.port), *extra]
        if "--weights" not in extra:  # the reference format: tests compare answers with the fp32 model
            cmd += ["--weights", "fp32"]
        self.log = log
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        deadline = time.time() + 300  # model loading on a busy 2-core machine
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become healthy in 300 s")

    def output(self) -> str:
        if self.log is None:
            return ""
        self.log.flush()
        return open(self.log.name).read()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(folder, tmp_path_factory, *extra):
    log = open(tmp_path_factory.mktemp("serve") / "server.log", "w+")
    return Server(folder, *extra, log=log)


@pytest.fixture(scope="session")
def server(bundled_folder, tmp_path_factory):
    s = start_server(bundled_folder, tmp_path_factory, "--max-concurrency", "8")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
