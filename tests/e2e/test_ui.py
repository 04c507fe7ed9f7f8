"""`reprolab ui`: announced once it listens, stopped whole by SIGTERM or Ctrl-C, refused on a busy port."""

import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from reprolab.records import tracking_ui
from tests.conftest import REPROLAB, free_port


def listening(port: int) -> bool:
    return tracking_ui.listening("127.0.0.1", port)


def read_until(process: subprocess.Popen, text: str, timeout: float) -> str:
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline and process.poll() is None, f"no {text!r} in: {seen[-2000:]}"
        if select.select([process.stdout], [], [], 1)[0]:
            seen += process.stdout.readline()
    return seen


# The same supervision around a server that starts in a fraction of a second (the MLflow UI takes 10 s):
# for the other ways to stop it.
STAND_IN = (
    "import sys\nfrom reprolab.records.tracking_ui import run_server\n"
    "port = int(sys.argv[1])\n"
    "sys.exit(run_server([sys.executable, '-m', 'http.server', '--bind', '127.0.0.1', str(port)],"
    " '127.0.0.1', port, 'a stand-in server'))"
)


@pytest.mark.parametrize(
    "stop_with",
    [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
    ids=["mlflow-SIGTERM", "stand-in-Ctrl-C", "stand-in-SIGKILL"],
)
def test_ui_says_where_once_it_listens_and_a_signal_stops_the_whole_server(tmp_path, stop_with):
    port = free_port()
    if stop_with == signal.SIGTERM:
        command, what = [REPROLAB, "ui", "--port", str(port)], f"the MLflow UI of sqlite:///{tmp_path}/mlflow.db"
        page = "/#/experiments/1/runs"  # the runs table, not MLflow 3's GenAI overview
    else:
        command, what, page = [sys.executable, "-c", STAND_IN, str(port)], "a stand-in server", ""
    ui = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        read_until(ui, f"ui: {what} is at http://127.0.0.1:{port}{page} (Ctrl-C", timeout=180)
        assert listening(port), "the URL was printed before the port listened"
        ui.send_signal(stop_with)
        if stop_with == signal.SIGKILL:  # no chance to clean up: the server stops on its own
            assert ui.wait(timeout=60) == -signal.SIGKILL
        else:
            assert ui.wait(timeout=60) == 0
            assert "ui: stopped" in ui.stdout.read()
        deadline = time.monotonic() + 30
        while listening(port) and time.monotonic() < deadline:  # the server's shutdown, then the kernel
            time.sleep(0.2)
        assert not listening(port), "a server process outlived `reprolab ui`"
    finally:  # after a failed assertion: SIGTERM, so that `reprolab ui` stops the server it started
        if ui.poll() is None:
            ui.terminate()
            try:
                ui.wait(timeout=60)
            except subprocess.TimeoutExpired:
                ui.kill()
                ui.wait()


def test_a_busy_port_is_an_error_and_another_host_a_warning(tmp_path):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", port))
        taken.listen()
        for host in ("127.0.0.1", "0.0.0.0"):
            done = subprocess.run(
                [REPROLAB, "ui", "--host", host, "--port", str(port)],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 2
            assert done.stderr.endswith(
                f"error: port {port} on {host} is in use (another `reprolab ui`?): stop it "
                "or choose another with --port\n"
            )
            assert ("WARNING --host 0.0.0.0" in done.stderr) == (host == "0.0.0.0")
    assert not os.path.exists(tmp_path / "mlflow.db")  # nothing was started
