"""A `weir serve` child process on an ephemeral loopback port."""

import os
import re
import subprocess
import threading

import pytest

WEIR = os.environ.get("WEIR_BIN", os.path.join(os.path.dirname(__file__), "../../target/debug/weir"))


class Weir:
    def __init__(self, data_dir, config=None):
        args = [WEIR, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
        if config is not None:
            path = os.path.join(str(data_dir) + ".toml")
            with open(path, "w") as f:
                f.write(config)
            args += ["--config", path]
        self.proc = subprocess.Popen(
            args,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
        )
        self.addr = None
        self.token_addr = None
        for line in self.proc.stderr:
            token = re.search(r"token endpoint listening token_addr=(\S+)", line)
            if token:
                self.token_addr = token.group(1)
            match = re.search(r" listening addr=(\S+)", line)
            if match:
                self.addr = match.group(1)
                break
        if self.addr is None:
            raise RuntimeError("weir serve did not start")
        # Keep draining the log so the server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def sql(self, statement, fmt="csv", token=None):
        env = {**os.environ, "WEIR_TOKEN": token} if token else None
        out = subprocess.run(
            [WEIR, "sql", "--server", f"http://{self.addr}", "--format", fmt, "-c", statement],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return out.stdout

    def stop(self):
        self.proc.terminate()
        return self.proc.wait(timeout=60)


@pytest.fixture
def weir(tmp_path):
    server = Weir(tmp_path / "data")
    yield server
    if server.proc.poll() is None:
        assert server.stop() == 0
