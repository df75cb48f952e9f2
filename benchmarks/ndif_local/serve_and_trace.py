"""Stand up a real NDIF server on this machine, serve the built-in model from its folder, trace
one fact with `cu.trace(..., backend="nnsight", remote=True)` against it, and check that the
scores equal the local engine's. Run through `run.sh`, which puts it in a network namespace with
only loopback (Ray rewrites 127.0.0.1 into the machine's interface address).

    sudo benchmarks/ndif_local/run.sh          # or, as root: benchmarks/ndif_local/run.sh

The server is ndif 0.1.2 from its own virtual environment (`setup.sh`; `NDIF_VENV` names it):
redis-server, moto's S3 server for large results, a Ray head declaring one (absent) GPU so that
ndif's controller places models on it, ndif's controller with the CPU model actor of
`cpu_actor.py`, and ndif's API under gunicorn. `sitecustomize.py` holds the shims ndif 0.1.2 and
nnsight 0.8.1 need to serve a local folder offline. Every process is stopped at the end, by its
process group; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NDIF_VENV = Path(os.environ.get("NDIF_VENV", ROOT / ".ndif-venv"))
HOST = "127.0.0.1"
PORTS = dict(redis=6379, s3=9000, ray=6385, ray_client=10001, api=8001)
TIMEOUT_S = 240  # for each service to come up, and for the deployment


def main() -> int:
    if not (NDIF_VENV / "bin" / "ray").exists():
        print(f"no ndif environment at {NDIF_VENV}; run benchmarks/ndif_local/setup.sh first (or set NDIF_VENV)")
        return 2
    if _reaches_outside():
        print("this process can reach beyond loopback; run it through run.sh (a loopback-only network namespace)")
        return 2
    home = Path(tempfile.mkdtemp(prefix="ndif-local-"))
    (home / "logs").mkdir()
    env = _server_environment(home)
    with ExitStack() as stack:
        start = time.perf_counter()

        def started(name: str, command: list[str], port: int) -> None:
            stack.enter_context(_service(name, command, env, home, port))

        started("redis", ["redis-server", "--bind", HOST, "--port", str(PORTS["redis"]), "--save", "",
                          "--appendonly", "no"], PORTS["redis"])
        started("s3", [str(NDIF_VENV / "bin" / "moto_server"), "-H", HOST, "-p", str(PORTS["s3"])], PORTS["s3"])
        resources = json.dumps({"head": 10, "cuda_memory_bytes": 16 << 30, "cpu_memory_bytes": 8 << 30})
        started("ray", [str(NDIF_VENV / "bin" / "ray"), "start", "--head", "--block", "--node-ip-address", HOST,
                        "--port", str(PORTS["ray"]), "--ray-client-server-port", str(PORTS["ray_client"]),
                        "--num-cpus", "4", "--num-gpus", "1", f"--resources={resources}",
                        "--include-dashboard", "true", "--dashboard-host", HOST,  # the controller reads its state API
                        "--dashboard-port", "8265", "--disable-usage-stats",
                        "--temp-dir", str(home / "ray")], PORTS["ray_client"])
        _run("controller", [_python(), "-m", "ndif.services.ray.deployments.controller.controller"],
             {**env, "RAY_ADDRESS": f"{HOST}:{PORTS['ray']}"}, home)
        started("api", [str(NDIF_VENV / "bin" / "gunicorn"), "--config", "python:ndif.services.api.gunicorn_conf",
                        "--bind", f"{HOST}:{PORTS['api']}", "ndif.services.api.app:app"], PORTS["api"])
        print(f"services up in {time.perf_counter() - start:.1f} s")
        try:
            code = _deploy_and_trace(env, home)
        except BaseException:
            print(f"the servers' logs are in {home / 'logs'} and {home / 'ray' / 'session_latest' / 'logs'}")
            raise
    if code == 0:
        shutil.rmtree(home, ignore_errors=True)
    return code


def _deploy_and_trace(env: dict, home: Path) -> int:
    os.environ.update(NDIF_HOST=f"http://{HOST}:{PORTS['api']}", NDIF_API_KEY="local")
    from nnsight import TransformersModel
    from nnsight.modeling import huggingface

    import causal_unlearn as cu
    from causal_unlearn.models.loader import BUILTIN_MODELS

    folder = str(BUILTIN_MODELS["olmo-tiny-bios"])
    huggingface._ID_CACHE[folder] = folder  # a local folder is its own id: nothing to ask the Hub
    remote_lm = cu.load_model(TransformersModel(folder, task="text-generation"))
    key = remote_lm.nnsight.to_model_key()
    spec = dict(checkpoint=folder, model_key=key, trusted=True, dtype="float32", max_tp=0,
                size_bytes=os.path.getsize(Path(folder) / "model.safetensors"))
    start = time.perf_counter()
    _run("deploy", [_python(), str(HERE / "deploy.py"), json.dumps(spec), str(TIMEOUT_S)], env, home)
    print(f"deployed {key} in {time.perf_counter() - start:.1f} s")

    world = cu.make_bios_world()
    fact = world.facts_to_trace()[0]
    settings = dict(samples=4, seed=0, progress=False)
    local = cu.trace(cu.load_model("olmo-tiny-bios"), fact.prompt, fact.subject, **settings)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        remote = cu.trace(remote_lm, fact.prompt, fact.subject, backend="nnsight", remote=True, **settings)
        times.append(time.perf_counter() - start)
    diff = max([float((remote.scores[k] - local.scores[k]).abs().max()) for k in local.kinds]
               + [abs(remote.high - local.high), abs(remote.low - local.low)])
    print(f"{fact.prompt!r}: remote=True against the local engine, largest difference {diff:.2e} over "
          f"{sum(s.numel() for s in local.scores.values())} scores and high/low (high {remote.high:.6f}, low "
          f"{remote.low:.6f}); answer {remote.answer!r} both: {remote.answer_id == local.answer_id}; "
          f"remote trace {', '.join(f'{t:.2f}' for t in times)} s (2 requests each)")
    ok = diff <= 1e-5 and remote.answer_id == local.answer_id
    print("OK" if ok else "FAILED: the remote scores differ from the local ones")
    return 0 if ok else 1


def _server_environment(home: Path) -> dict:
    path = f"{NDIF_VENV / 'bin'}:{os.environ['PATH']}"
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))},
        "PATH": path, "PYTHONPATH": str(HERE),  # sitecustomize.py (shims) and cpu_actor.py
        "HF_HUB_OFFLINE": "1", "NDIF_HOME": str(home), "NDIF_SERVICE": "ndif-local",
        "NDIF_REDIS_URL": f"redis://{HOST}:{PORTS['redis']}",
        "NDIF_OBJECT_STORE_URL": f"http://{HOST}:{PORTS['s3']}",
        "NDIF_OBJECT_STORE_ACCESS_KEY": "local", "NDIF_OBJECT_STORE_SECRET_KEY": "local",
        "NDIF_RAY_ADDRESS": f"ray://{HOST}:{PORTS['ray_client']}", "NDIF_API_PORT": str(PORTS["api"]),
        "NDIF_DEFAULT_MODEL_ACTOR_CLASS": "cpu_actor.CPUModelActor", "NDIF_DEFAULT_DTYPE": "float32",
        "GRPC_ENABLE_FORK_SUPPORT": "0", "RAY_USAGE_STATS_ENABLED": "0",
    }


def _python() -> str:
    return str(NDIF_VENV / "bin" / "python")


class _service:
    """A server process in its own process group, up once `port` accepts connections; stopped
    on exit with everything it started (Ray's workers leave the group: they are found as
    descendants before the stop)."""

    def __init__(self, name, command, env, home, port):
        self.name, self.command, self.env, self.home, self.port = name, command, env, home, port

    def __enter__(self):
        log = open(self.home / "logs" / f"{self.name}.log", "wb")
        self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + TIMEOUT_S
        while not _accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(f"{self.name} did not come up on port {self.port}; see "
                                   f"{self.home / 'logs' / (self.name + '.log')}:\n{_tail(self.home, self.name)}")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        self._stop()

    def _stop(self):
        if self.process.poll() is not None:
            return
        descendants = psutil.Process(self.process.pid).children(recursive=True)
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        _, alive = psutil.wait_procs(descendants, timeout=15)
        for process in alive:
            process.kill()


def _run(name: str, command: list[str], env: dict, home: Path) -> None:
    """A one-shot command of the server's (bounded in time); its output goes to its log."""
    with open(home / "logs" / f"{name}.log", "wb") as log:
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=TIMEOUT_S)
    if done.returncode:
        raise RuntimeError(f"{name} failed ({done.returncode}):\n{_tail(home, name)}")


def _tail(home: Path, name: str, lines: int = 30) -> str:
    return "\n".join((home / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _reaches_outside() -> bool:
    """Whether this network namespace has any interface but loopback."""
    return any(name != "lo" for _, name in socket.if_nameindex())


if __name__ == "__main__":
    sys.exit(main())
