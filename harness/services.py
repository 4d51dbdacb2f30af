"""A scenario's services: dependencies (a Kafka broker...) that the harness
starts before the scenario's servers and stops after them.

Services run pinned to the load tool's CPUs (apart from the server under
test), without a CPU cap, and are sampled by their own sampler so that their
cost is reported beside, never inside, the server's figures. Under the
process runtime a service is a native process in a cgroup of its own; under
the docker runtime a service that declares an image (`docker = {dockerfile =
...}` in scenario.toml) runs as a container of that image on the host
network, its data folder mounted read-write at the same path; one that
declares none stays a native process, and the results say which.
"""
from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

from . import sampling
from .errors import LangbenchError, ServerError
from .limits import nofile_target
from .manifest import Scenario, Service, expand
from .readiness import wait_ready
from .runtimes import LaunchSpec
from .runtimes.process import ProcessRuntime



class RunningService:
    def __init__(self, svc: Service, ports: dict[str, int], workdir: Path):
        self.svc = svc
        self.ports = ports
        self.workdir = workdir
        self.handle = None
        self.sampler: sampling.Sampler | None = None
        self.startup_s: float | None = None
        self.restarts = 0
        self.image: dict | None = None     # the built image (docker runtime), else None
        self.container: dict | None = None


class ServiceManager:
    def __init__(self, scenario: Scenario, run_id: str, cpus: list[int], out_dir: Path,
                 base_placeholders: dict[str, str], sample_hz: float, progress=print,
                 runtime=None):
        self.scenario = scenario
        self.run_id = run_id
        self.cpus = cpus
        self.out_dir = out_dir
        self.base = dict(base_placeholders)
        self.sample_hz = sample_hz
        self.progress = progress
        # the run's runtime places services (process: native; docker: a container
        # of the service's image when it declares one, else native)
        self.runtime = runtime if runtime is not None else ProcessRuntime()
        self.host = self.runtime.address("service")
        self.running: dict[str, RunningService] = {}
        for svc in scenario.services:
            ports = {name: self.runtime.free_port("service") for name in svc.ports}
            self.running[svc.name] = RunningService(svc, ports, out_dir / "services" / svc.name)

    # ---------------------------------------------------------------- placeholders
    def placeholders(self) -> dict[str, str]:
        d: dict[str, str] = {}
        for name, rs in self.running.items():
            for pname, port in rs.ports.items():
                d[f"svc.{name}.{pname}"] = str(port)
            d[f"svc.{name}.dir"] = str(rs.workdir)
            d[f"svc.{name}.host"] = self.host
        return d

    def _ph(self) -> dict[str, str]:
        return {**self.base, **self.placeholders()}

    # ---------------------------------------------------------------- lifecycle
    def setup(self) -> None:
        """Each service's one-off setup (fetching a broker's jars...)."""
        for rs in self.running.values():
            if not rs.svc.setup:
                continue
            argv = [expand(a, self._ph()) for a in rs.svc.setup]
            log = self.out_dir / "logs" / f"service-{self.scenario.name}-{rs.svc.name}-setup.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            self.progress(f"{self.scenario.name}: setting up service {rs.svc.name}")
            with log.open("wb") as fh:
                try:
                    code = subprocess.run(argv, cwd=self.scenario.dir, stdout=fh, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, timeout=rs.svc.setup_timeout_s).returncode
                except (OSError, subprocess.TimeoutExpired) as exc:
                    raise ServerError(f"service {rs.svc.name}: setup failed: {exc}") from None
            if code != 0:
                raise ServerError(f"service {rs.svc.name}: setup exited with code {code} (log: {log})")
        for rs in self.running.values():
            try:
                rs.image = self.runtime.prepare_service(rs.svc, self.scenario, self.out_dir / "logs")
            except LangbenchError as exc:
                raise ServerError(f"service {rs.svc.name}: {exc}") from None
            if rs.image is None:
                continue
            self.progress(f"{self.scenario.name}: service {rs.svc.name} image {rs.image['tag']} "
                          f"{rs.image['size_mb']:.0f} MB{' (cached)' if rs.image['cached'] else ''}")

    def start(self, name: str) -> float:
        rs = self.running[name]
        rs.workdir.mkdir(parents=True, exist_ok=True)
        ph = self._ph()
        env = {k: expand(v, ph) for k, v in rs.svc.env.items()}
        spec = LaunchSpec(run_id=self.run_id, key=f"{self.run_id}-svc-{self.scenario.name}-{name}-{rs.restarts}",
                          impl=None, scenario=self.scenario, host=self.host,
                          port=next(iter(rs.ports.values()), 0), cpus=self.cpus, cpu_quota=None, env=env,
                          command=[expand(a, ph) for a in rs.svc.command],
                          log_path=self.out_dir / "logs" / f"service-{self.scenario.name}-{name}.log",
                          cwd=self.scenario.dir, role="service", mounts={str(rs.workdir): "rw"},
                          nofile=nofile_target())
        if rs.svc.docker is not None and rs.svc.docker.command:
            spec.image_command = [expand(a, ph) for a in rs.svc.docker.command]
        rs.handle = self.runtime.start_service(spec, rs.svc, rs.image)
        if rs.image is not None:
            rs.container = rs.handle.describe()
        readiness = rs.svc.readiness
        if readiness.kind == "command":
            readiness = replace(readiness, params={**readiness.params,
                                                   "command": [expand(a, ph) for a in readiness.params["command"]]})
        port = int(expand(str(readiness.params.get("port", spec.port)), ph))
        h = rs.handle
        try:
            rs.startup_s = wait_ready(readiness, self.host, port, h.alive,
                                      lambda: f"exit code {h.exit_code()}; log: {h.log_tail()}", h.started_at,
                                      poll_s=0.25)
        except ServerError as exc:
            h.stop(grace_s=5.0)
            raise ServerError(f"service {name}: {exc}") from None
        rs.sampler = sampling.Sampler(sampling.counters_of(h), h.memory_bytes, self.sample_hz).start()
        self.progress(f"{self.scenario.name}: service {name} ready in {rs.startup_s:.1f} s")
        return rs.startup_s

    def start_all(self) -> None:
        for name in self.running:
            self.start(name)

    def stop(self, name: str, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after grace_s (0: kill at once, a crash)."""
        rs = self.running[name]
        if rs.sampler is not None:
            rs.sampler.stop()
        if rs.handle is not None:
            rs.handle.stop(grace_s=grace_s)
            rs.handle = None

    def restart(self, name: str) -> None:
        self.running[name].restarts += 1
        self.start(name)

    def stop_all(self) -> None:
        for name in list(self.running):
            try:
                self.stop(name)
            except Exception:  # noqa: BLE001 - teardown is best effort; leftovers are swept by run id
                pass

    # ---------------------------------------------------------------- measuring
    def marks(self) -> dict[str, sampling.Sample]:
        return {name: rs.sampler.mark() for name, rs in self.running.items()
                if rs.sampler is not None and rs.handle is not None}

    def window(self, a: dict[str, sampling.Sample], b: dict[str, sampling.Sample],
               t0: float | None = None, t1: float | None = None) -> dict[str, dict]:
        """CPU and memory of each service between two sets of marks, or over
        [t0, t1] inside them (a load tool's send window)."""
        out = {}
        for name, ma in a.items():
            mb = b.get(name)
            rs = self.running[name]
            if mb is None or rs.sampler is None:
                continue
            lo, hi = (t0, t1) if t0 is not None and t1 is not None else (ma.t, mb.t)
            samples = rs.sampler.snapshot()
            cpu = sampling.delta(samples, sampling.SERVER_CPU, lo, hi)
            mem = sampling.memory_stats(sampling.window(samples, lo, hi))
            out[name] = {"cpu_cores": cpu / (hi - lo) if cpu is not None and hi > lo else None, "cpu_s": cpu,
                         "rss_mb": mem["mean_mb"], "rss_peak_mb": mem["peak_mb"]}
        return out

    def describe(self) -> dict:
        out = {}
        for name, rs in self.running.items():
            d = {"ports": rs.ports, "cpus": self.cpus, "startup_s": rs.startup_s,
                 "restarts": rs.restarts, "runtime": "docker" if rs.image is not None else "process"}
            if rs.image is not None:
                d.update(image=rs.image, container=rs.container,
                         command=rs.svc.docker.command or "the image's own")
            else:
                d["command"] = rs.svc.command
            out[name] = d
        return out

