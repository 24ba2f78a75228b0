"""A real tritonserver for the tests: a cached server venv and a server process on 127.0.0.1.

The ``nvidia-pytriton`` wheel bundles a runnable ``tritonserver`` with the Python backend (and no
onnxruntime backend). Its Python backend crashes on the first ``TYPE_STRING`` request under numpy 2, so
the server gets its own venv with numpy 1.26, the wheel installed ``--no-deps``, and onnxport's runtime
dependencies at the versions of ``constraints.txt``; onnxport itself comes from this checkout through
a ``.pth`` file naming its ``src`` (the Python backend's stub does not pass ``PYTHONPATH`` on), so the
cached venv never holds a stale copy.

``python parity_tests/triton_server.py`` builds (or reports) the venv from the shell.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTRITON = "nvidia-pytriton==0.7.0"
SERVER_NUMPY = "numpy==1.26.4"
# onnxport's base dependencies (pyproject), pinned by constraints.txt minus its numpy pin.
RUNTIME_PACKAGES = ("onnxruntime", "onnx", "safetensors", "sentencepiece", "tokenizers", "rjieba", "regex")
SHM_GLOB = "/dev/shm/triton_python_backend_shm_*"


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "onnxport"


def _server_constraints() -> list[str]:
    lines = (REPO_ROOT / "constraints.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#") and not line.startswith("numpy")]


def venv_dir() -> Path:
    """Where the server venv lives: keyed by what goes into it, so a changed pin builds a new one."""
    override = os.environ.get("ONNXPORT_TRITON_VENV")
    if override:
        return Path(override)
    key = json.dumps([PYTRITON, SERVER_NUMPY, RUNTIME_PACKAGES, _server_constraints(), sys.version_info[:2],
                      str(REPO_ROOT)])
    return _cache_root() / f"triton-server-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _run(cmd: list[str], log) -> None:
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, timeout=900)


def build_venv() -> Path:
    """The server venv, built once (a ``ready`` marker says it is complete). Raises on install failure.

    A file lock makes parallel test workers wait for one build instead of racing.
    """
    import fcntl

    venv = venv_dir()
    marker = venv / "onnxport-ready"
    if marker.is_file():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / (venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return venv
        return _build_venv(venv, marker)


def _build_venv(venv: Path, marker: Path) -> Path:
    if venv.exists():
        shutil.rmtree(venv)  # an interrupted build
    log_path = venv.parent / (venv.name + ".log")
    with open(log_path, "w") as log:
        _run([sys.executable, "-m", "venv", str(venv)], log)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        constraints = venv / "constraints.txt"
        constraints.write_text("\n".join(_server_constraints()) + "\n")
        _run(pip + ["--no-deps", PYTRITON], log)
        _run(pip + ["-c", str(constraints), SERVER_NUMPY, *RUNTIME_PACKAGES], log)
        _prepare_backends(venv)
        (_site_packages(venv) / "onnxport-checkout.pth").write_text(str(REPO_ROOT / "src") + "\n")
    marker.write_text("ok\n")
    return venv


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3.*/site-packages"))


def _prepare_backends(venv: Path) -> None:
    """Backend directory with the Python backend and the stub built for this Python (as pytriton does)."""
    dist = _site_packages(venv) / "pytriton" / "tritonserver"
    backends = venv / "triton" / "backends"
    shutil.copytree(dist / "backends", backends, dirs_exist_ok=True)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    shutil.copy(stub, backends / "python" / "triton_python_backend_stub")
    shutil.copytree(dist / "caches", venv / "triton" / "caches", dirs_exist_ok=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_shm(before: set[str]) -> None:
    """Remove the shared-memory regions the Python backend left (only those not there before)."""
    for path in set(glob.glob(SHM_GLOB)) - before:
        with contextlib.suppress(OSError):
            os.unlink(path)


@dataclass
class Server:
    process: subprocess.Popen
    http_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def get(self, path: str, timeout: float = 10.0):
        with urllib.request.urlopen(f"http://{self.url}{path}", timeout=timeout) as response:
            return json.loads(response.read() or b"null")

    def post(self, path: str, body: dict | None = None, timeout: float = 10.0):
        request = urllib.request.Request(f"http://{self.url}{path}", data=json.dumps(body or {}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_server(repository: str | Path, log_dir: str | Path, venv: Path | None = None, ready_model: str = "",
                   timeout: float = 60.0):
    """tritonserver on free 127.0.0.1 ports serving ``repository``; stopped by its pid on exit.

    Models that fail to load (the ``_onnx`` model, for want of its backend) leave the server running:
    ``--exit-on-error=false`` and ``--strict-readiness=false``. Waits until ``ready_model`` is ready.
    """
    venv = venv or build_venv()
    site = _site_packages(venv)
    env = dict(os.environ)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"  # the stub runs the venv's python
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(site / "nvidia_pytriton.libs"), env.get("LD_LIBRARY_PATH")]))
    env.pop("VIRTUAL_ENV", None)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    log_path = Path(log_dir) / f"tritonserver-{http_port}.log"
    shm_before = set(glob.glob(SHM_GLOB))
    cmd = [
        str(site / "pytriton" / "tritonserver" / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={venv / 'triton' / 'backends'}",
        f"--cache-directory={venv / 'triton' / 'caches'}",
        "--http-address=127.0.0.1", f"--http-port={http_port}",
        "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}",
        "--allow-metrics=false", f"--metrics-port={metrics_port}",
        "--disable-auto-complete-config",
        "--exit-on-error=false", "--strict-readiness=false",
        "--log-verbose=0",
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(process, http_port, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {process.returncode}:\n{server.log()[-4000:]}")
            try:
                if not ready_model:
                    urllib.request.urlopen(f"http://{server.url}/v2/health/live", timeout=2).close()
                    break
                states = {m["name"]: m for m in server.post("/v2/repository/index", timeout=2)}
                state = states.get(ready_model, {})
                if state.get("state") == "READY":
                    break
                if state.get("state") == "UNAVAILABLE":
                    raise RuntimeError(f"{ready_model} failed to load: {state.get('reason')}\n{server.log()[-4000:]}")
                raise ConnectionError("still loading")
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tritonserver not ready after {timeout}s:\n{server.log()[-4000:]}") from None
                time.sleep(0.3)
        yield server
    finally:
        stop(process)
        clean_shm(shm_before)


def stop(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM to the server's process group (it and its Python-backend stubs), SIGKILL after ``grace`` s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


if __name__ == "__main__":
    print(build_venv())
