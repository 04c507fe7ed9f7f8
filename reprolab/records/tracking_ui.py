"""`reprolab ui`: the MLflow UI on the project's store, started, announced and stopped as one process.

The server (`mlflow ui`, which runs its own worker processes) gets a process group of its own: Ctrl-C or
SIGTERM to this command stops the whole group, so no server is left holding the port. On Linux the
server is also told to stop if this command dies without that chance (SIGKILL, OOM); it then stops its
workers itself. The URL is printed
only once the port accepts connections; a port already in use is an error before anything starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

from reprolab.errors import StageError
from reprolab.records import tracking

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
START_TIMEOUT_SECONDS = 180  # the first start creates the store's tables
STOP_GRACE_SECONDS = 10


def _stop_with_parent() -> None:
    """Run in the server's process before it starts: Linux sends it SIGTERM when its parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def refuse_busy(host: str, port: int) -> None:
    if not port_free(host, port):
        raise StageError(
            f"port {port} on {host} is in use (another `reprolab ui`?): stop it or choose another with --port"
        )


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def serve(host: str, port: int) -> int:
    """Run the MLflow UI of this project's store until it exits or this process is told to stop."""
    if host not in LOCAL_HOSTS:
        print(
            f"ui: WARNING --host {host} serves the tracking store (every run, param and artifact) to "
            "other machines without authentication; 127.0.0.1 keeps it on this one",
            file=sys.stderr,
        )
    refuse_busy(host, port)  # before the store is opened (and created)
    uri = tracking.tracking_uri()
    experiment = tracking.connect().get_experiment_by_name(tracking.experiment_name()).experiment_id
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    return run_server(command, host, port, f"the MLflow UI of {uri}", f"/#/experiments/{experiment}/runs")


def run_server(command: list[str], host: str, port: int, what: str, page: str = "") -> int:
    """Start the server `command` (which listens on host:port), announce it (at `page`) once it listens, stop
    its whole process group on SIGINT/SIGTERM; returns 0 when stopped that way, else the server's exit status."""
    refuse_busy(host, port)
    server = subprocess.Popen(
        command, start_new_session=True, preexec_fn=_stop_with_parent if sys.platform.startswith("linux") else None
    )
    stop_asked: list[float] = []

    def signal_group(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signum)

    def on_stop(_signum, _frame) -> None:  # only flags and forwards: waiting here could deadlock Popen
        stop_asked.append(time.monotonic())
        signal_group(signal.SIGTERM)

    def wait_for_exit() -> int:
        while server.poll() is None:
            if stop_asked and time.monotonic() - stop_asked[0] > STOP_GRACE_SECONDS:
                signal_group(signal.SIGKILL)
            time.sleep(0.2)
        return server.returncode

    previous = {signum: signal.signal(signum, on_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not stop_asked and not listening(host, port):
            if server.poll() is not None:
                raise StageError(
                    f"{what} exited with status {server.returncode} before it listened "
                    f"on {host}:{port} (its messages are above)"
                )
            if time.monotonic() > deadline:
                raise StageError(f"{what} did not listen on {host}:{port} within {START_TIMEOUT_SECONDS} s")
            time.sleep(0.2)
        if not stop_asked:
            shown = f"[{host}]" if ":" in host else host
            print(f"ui: {what} is at http://{shown}:{port}{page} (Ctrl-C stops it)", flush=True)
        status = wait_for_exit()
        if stop_asked:
            print("ui: stopped", flush=True)
            return 0
        return status
    finally:
        if server.poll() is None:
            stop_asked.append(time.monotonic())
            signal_group(signal.SIGTERM)
            wait_for_exit()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
