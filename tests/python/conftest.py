"""A `weir serve` child process on an ephemeral loopback port."""

import os
import re
import subprocess
import threading

import pytest

WEIR = os.environ.get("WEIR_BIN", os.path.join(os.path.dirname(__file__), "../../target/debug/weir"))


class Weir:
    def __init__(self, data_dir):
        self.proc = subprocess.Popen(
            [WEIR, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
        )
        self.addr = None
        for line in self.proc.stderr:
            match = re.search(r"listening addr=(\S+)", line)
            if match:
                self.addr = match.group(1)
                break
        if self.addr is None:
            raise RuntimeError("weir serve did not start")
        # Keep draining the log so the server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def sql(self, statement, fmt="csv"):
        out = subprocess.run(
            [WEIR, "sql", "--server", f"http://{self.addr}", "--format", fmt, "-c", statement],
            capture_output=True,
            text=True,
            check=True,
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
