"""The `docker` runtime: each server in a container, through the Docker SDK.

- Image: built once per implementation from its Dockerfile, the build context
  being the implementation's folder after the host build (the image copies
  the artifacts; no toolchain in it). Tagged
  `langbench/<scenario>-<impl>:<source hash>`; its size as Docker reports it,
  its id and the base it was built on go into the results.
- Container: the image's own ENTRYPOINT/CMD, on the host network (servers
  bind HOST=127.0.0.1), pinned with a cpuset, capped with a CFS quota over the
  profile's period (`cpu_period`/`cpu_quota`, read back from the cgroup), without privileges (all capabilities dropped, no-new-privileges),
  labelled `langbench.run=<run id>` and `langbench.impl=<id>`. The scenario's
  folder is mounted read-only at the same absolute path, so scenario env
  values such as `{scenario_dir}/data/notes.json` mean the same file inside.
- CPU: the container cgroup's cumulative usage counter, read from the cgroup
  file directly (v1 cpuacct.usage, v2 cpu.stat usage_usec). Memory: the
  proportional set size (PSS) summed over the processes of the container's
  cgroup, read from /proc/PID/smaps_rollup on the host: the same figure as
  the process runtime's. Where /proc of those processes cannot be read, the
  cgroup's anonymous memory plus its mapped files (v1 total_rss +
  total_mapped_file, v2 anon + file_mapped). Never `docker stats`' usage
  minus inactive file: that counts the page cache of files the server wrote
  lately, so a server that records to disk (blackhole) was charged about as
  much again for its recordings (the last resort, where those counters are
  missing too). Reading the files gives any sampling rate; where they cannot
  be read (remote daemon, rootless) the stats API is used instead.
- Cleanup: every container is removed when stopped; containers of a killed
  run (another `langbench.run` label) are removed by the next run; an atexit
  hook removes any container of this process that is still there.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import re
import threading
import time
from pathlib import Path

from .. import build as builder
from .. import images
from ..errors import LangbenchError, ServerError, ToolError
from ..manifest import Implementation, Scenario, Service
from .base import LaunchSpec, Runtime, ServerHandle, StopResult, owner_alive, owner_tag
from .cgroups import CGROUP_ROOT, _v1_mount, read_quota, read_throttling

RUN_LABEL = "langbench.run"
IMPL_LABEL = "langbench.impl"
SERVICE_LABEL = "langbench.service"     # "<scenario>/<service>" on a scenario service's container and image
IMAGE_LABEL = "langbench.image"
OWNER_LABEL = "langbench.owner"         # "<pid>:<start time>" of the harness process that made it
BASE_ENV = "LANGBENCH_BASE_IMAGE_"       # + implementation name in upper case: a BASE_IMAGE build arg


# ------------------------------------------------------------------ arithmetic (as the docker CLI does it)

def memory_usage(usage: int, stat: dict[str, int]) -> int:
    """The container's memory: anonymous memory plus mapped files (cgroup v1
    total_rss + total_mapped_file, hierarchical; v2 anon + file_mapped).

    Page cache that no process maps (files the server wrote or read) is left
    out. Without those counters: usage minus inactive file cache, `docker
    stats`' MEM USAGE (v1 total_inactive_file, v2 inactive_file; skipped when
    it would not leave a positive figure)."""
    if "total_rss" in stat and "total_mapped_file" in stat:
        return stat["total_rss"] + stat["total_mapped_file"]
    if "anon" in stat and "file_mapped" in stat:
        return stat["anon"] + stat["file_mapped"]
    v = stat.get("total_inactive_file")
    if v is not None and v < usage:
        return usage - v
    v = stat.get("inactive_file")
    if v is not None and v < usage:
        return usage - v
    return usage


def cpu_percent(stats: dict) -> float:
    """`docker stats`' CPU % from one stats API answer (cpu_stats vs precpu_stats)."""
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (pre.get("cpu_usage") or {}).get("total_usage", 0)
    sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    if sys_delta > 0 and cpu_delta > 0:
        return cpu_delta / sys_delta * online * 100.0
    return 0.0


def pss_of_rollup(text: str) -> int:
    """Bytes of the 'Pss:' line of a /proc/PID/smaps_rollup."""
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise OSError("smaps_rollup has no Pss line")


def stats_memory(stats: dict) -> int:
    mem = stats.get("memory_stats") or {}
    return memory_usage(int(mem.get("usage", 0)), mem.get("stats") or {})


def parse_stat(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if v.strip().lstrip("-").isdigit():
            out[k] = int(v)
    return out


# ------------------------------------------------------------------ cgroup files of a container

class CgroupFiles:
    """Where a running container's counters are, found from its init process."""

    def __init__(self, version: int, cpu_file: Path, mem_usage: Path, mem_stat: Path, cpu_dir: Path | None = None):
        self.version, self.cpu_file, self.mem_usage, self.mem_stat = version, cpu_file, mem_usage, mem_stat
        self.cpu_dir = cpu_dir          # the cpu controller's folder: quota, period, throttling

    @classmethod
    def of_pid(cls, pid: int) -> "CgroupFiles | None":
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return None
        paths: dict[str, str] = {}
        for line in lines:
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            _, ctrls, path = parts
            for ctrl in (ctrls.split(",") if ctrls else [""]):
                paths[ctrl] = path
        if "" in paths and (CGROUP_ROOT / "cgroup.controllers").exists():      # v2
            d = CGROUP_ROOT / paths[""].lstrip("/")
            found = cls(2, d / "cpu.stat", d / "memory.current", d / "memory.stat", d)
        else:
            acct, mem = _v1_mount("cpuacct"), _v1_mount("memory")
            if acct is None or mem is None or "cpuacct" not in paths or "memory" not in paths:
                return None
            cpu_mount = _v1_mount("cpu")
            found = cls(1, acct / paths["cpuacct"].lstrip("/") / "cpuacct.usage",
                        mem / paths["memory"].lstrip("/") / "memory.usage_in_bytes",
                        mem / paths["memory"].lstrip("/") / "memory.stat",
                        cpu_mount / paths["cpu"].lstrip("/") if cpu_mount and "cpu" in paths else None)
        try:
            found.cpu_seconds()
            found.memory_bytes()
        except (OSError, ValueError):
            return None       # e.g. in another cgroup namespace: use the stats API
        return found

    def cpu_seconds(self) -> float:
        text = self.cpu_file.read_text()
        if self.version == 1:
            return int(text) / 1e9
        for line in text.splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
        raise OSError(f"{self.cpu_file} has no usage_usec")

    def memory_bytes(self) -> int:
        return memory_usage(int(self.mem_usage.read_text()), parse_stat(self.mem_stat.read_text()))

    def pids(self) -> list[int]:
        """The processes of the cgroup (its memory controller's cgroup.procs)."""
        return [int(x) for x in (self.mem_usage.parent / "cgroup.procs").read_text().split()]

    def pss_bytes(self) -> int:
        """PSS summed over the cgroup's processes (/proc/PID/smaps_rollup).
        A process that exits between the two reads is skipped; OSError when
        the cgroup is empty or a process's memory map cannot be read."""
        pids = self.pids()
        if not pids:
            raise OSError("no process in the container's cgroup")
        total = 0
        for pid in pids:
            try:
                text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            total += pss_of_rollup(text)
        return total

    def throttling(self) -> dict | None:
        if self.cpu_dir is None:
            return None
        return read_throttling(self.cpu_dir / "cpu.stat", self.version)

    def quota(self) -> tuple[float | None, int] | None:
        if self.cpu_dir is None:
            return None
        return read_quota(self.cpu_dir, self.version)

    def describe(self) -> dict:
        return {"cgroup_version": self.version, "cpu_file": str(self.cpu_file),
                "cpu_controller": str(self.cpu_dir) if self.cpu_dir else None,
                "memory_files": [str(self.mem_usage), str(self.mem_stat)]}


# ------------------------------------------------------------------ one container

class DockerHandle(ServerHandle):
    def __init__(self, runtime: "DockerRuntime", spec: LaunchSpec, image_ref: str,
                 command: list[str] | None = None):
        """`command` overrides the image's CMD; by default (servers) the image's
        own ENTRYPOINT/CMD runs and spec.command (the host command) is unused."""
        import docker.errors  # noqa: PLC0415
        self.spec = spec
        self.runtime = runtime
        c = runtime.client
        sc_dir = str(spec.scenario.dir)
        labels = {**spec.labels, RUN_LABEL: spec.run_id, OWNER_LABEL: _owner()}
        if spec.impl is not None:
            labels[IMPL_LABEL] = spec.impl.id
        volumes = {sc_dir: {"bind": sc_dir, "mode": "ro"}}
        for host_path, mode in spec.mounts.items():
            volumes[str(host_path)] = {"bind": str(host_path), "mode": mode}
        kwargs = dict(
            image=image_ref, name=_container_name(spec.key), detach=True,
            environment=dict(spec.env),
            labels=labels, network_mode="host",
            cpuset_cpus=",".join(str(x) for x in spec.cpus),
            volumes=volumes,
            privileged=False, cap_drop=["ALL"], security_opt=["no-new-privileges"],
            stdin_open=False, tty=False,
        )
        if spec.nofile:
            import docker.types  # noqa: PLC0415
            kwargs["ulimits"] = [docker.types.Ulimit(name="nofile", soft=int(spec.nofile), hard=int(spec.nofile))]
        if spec.cpu_quota is not None:
            # cpu_period + cpu_quota rather than nano_cpus: nano_cpus always
            # uses the kernel's default 100 ms period, whose 50 ms stalls would
            # dominate every tail latency.
            kwargs["cpu_period"] = int(spec.cfs_period_us)
            kwargs["cpu_quota"] = int(round(spec.cpu_quota * spec.cfs_period_us))
        if command:
            kwargs["command"] = list(command)
        self._lock = threading.Lock()
        self._exit: int | None = None
        self._stopped = False
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        # A log shared by successive containers (a service restarted for a
        # check) keeps the earlier ones: this container's output goes after them.
        self._log_offset = spec.log_path.stat().st_size if spec.log_path.exists() else 0
        try:
            self.container = c.containers.create(**kwargs)
        except docker.errors.APIError as exc:
            raise ServerError(f"could not create the container: {exc.explanation or exc}") from None
        runtime._mine.add(self.container.id)
        try:
            self.started_at = time.monotonic()
            self.container.start()
            self.container.reload()
            state = self.container.attrs["State"]
            self.pid = state.get("Pid") or 0
            self.cgroup = CgroupFiles.of_pid(self.pid) if self.pid else None
            # PSS where the host can read the processes' memory maps, as
            # under the process runtime; else the cgroup's own counters
            self.memory_kind = "cgroup"
            if self.cgroup is not None:
                try:
                    self.cgroup.pss_bytes()
                    self.memory_kind = "pss"
                except (OSError, ValueError):
                    pass
        except BaseException as exc:
            self._remove()
            if isinstance(exc, docker.errors.APIError):
                raise ServerError(f"could not start the container: {exc.explanation or exc}") from None
            raise

    # -- state
    def _state(self) -> dict:
        try:
            self.container.reload()
            return self.container.attrs["State"]
        except Exception:  # noqa: BLE001 - gone
            return {"Running": False, "ExitCode": self._exit}

    def alive(self) -> bool:
        if self._stopped:
            return False
        if self.pid and self.cgroup is not None:
            # Same machine, same pid namespace as the daemon: the container's
            # init process is the container (cheap enough to poll every 20 ms).
            try:
                state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return False
            return state not in ("Z", "X")
        return bool(self._state().get("Running"))

    def main_pid(self) -> int | None:
        return self.pid or None        # the container's init process, as the host sees it

    def exit_code(self) -> int | None:
        if self._stopped:
            return self._exit
        st = self._state()
        return None if st.get("Running") else st.get("ExitCode")

    # -- counters
    def _stats(self) -> dict:
        return self.container.stats(stream=False, one_shot=True)

    def cpu_seconds(self) -> float:
        """The counter now; OSError when it cannot be read (the container has
        exited, the daemon did not answer): a missing reading, never a stale one."""
        if self.cgroup is not None:
            return self.cgroup.cpu_seconds()
        try:
            v = (self._stats().get("cpu_stats") or {}).get("cpu_usage", {}).get("total_usage", 0) / 1e9
        except Exception as exc:  # noqa: BLE001 - stats API errors
            raise OSError(f"stats API: {exc}") from None
        if v == 0:
            raise OSError("stats API answered no CPU usage (the container has exited)")
        return v

    def throttling(self) -> dict | None:
        if self.cgroup is not None:
            return self.cgroup.throttling()
        try:
            thr = (self._stats().get("cpu_stats") or {}).get("throttling_data") or {}
        except Exception as exc:  # noqa: BLE001
            raise OSError(f"stats API: {exc}") from None
        return {"nr_periods": thr.get("periods", 0), "nr_throttled": thr.get("throttled_periods", 0),
                "throttled_s": thr.get("throttled_time", 0) / 1e9}

    def quota_applied(self) -> tuple[float | None, int] | None:
        if self.cgroup is not None and self.cgroup.cpu_dir is not None:
            return self.cgroup.quota()
        hc = self.container.attrs.get("HostConfig") or {}
        period, quota = hc.get("CpuPeriod") or 0, hc.get("CpuQuota") or 0
        if period and quota > 0:
            return quota / period, period
        return None, period

    def memory_bytes(self) -> int:
        if self.cgroup is not None:                 # OSError once exited: the sampler skips it
            return self.cgroup.pss_bytes() if self.memory_kind == "pss" else self.cgroup.memory_bytes()
        try:
            return stats_memory(self._stats())
        except Exception as exc:  # noqa: BLE001
            raise OSError(f"stats API: {exc}") from None

    # -- logs
    def _write_logs(self) -> None:
        try:
            data = self.container.logs(stdout=True, stderr=True, timestamps=False)
        except Exception:  # noqa: BLE001
            return
        with self.spec.log_path.open("r+b" if self.spec.log_path.exists() else "wb") as fh:
            fh.seek(self._log_offset)
            fh.write(data)
            fh.truncate()

    def log_tail(self, lines: int = 3) -> str:
        if not self._stopped:
            self._write_logs()
        return super().log_tail(lines)

    # -- stop
    def stop(self, grace_s: float = 5.0) -> StopResult:
        with self._lock:
            if self._stopped:
                return StopResult(self._exit, 0.0, False)
            t0 = time.monotonic()
            killed = False
            code = None
            if self._state().get("Running"):
                try:
                    self.container.kill(signal="SIGTERM")
                except Exception:  # noqa: BLE001 - exited in between
                    pass
                code = self._wait(grace_s)
                if code is None:
                    killed = True
                    try:
                        self.container.kill(signal="SIGKILL")
                    except Exception:  # noqa: BLE001
                        pass
                    self._wait(10)
            shutdown_s = time.monotonic() - t0
            if code is None and not killed:
                code = self._state().get("ExitCode")
            self._exit = None if killed else code
            self._write_logs()
            self._remove()
            self._stopped = True
            return StopResult(exit_code=self._exit, shutdown_s=shutdown_s, killed=killed)

    def _wait(self, timeout: float) -> int | None:
        try:
            return int(self.container.wait(timeout=timeout)["StatusCode"])
        except Exception:  # noqa: BLE001 - requests' ReadTimeout / ConnectionError
            return None

    def _remove(self) -> None:
        try:
            self.container.remove(force=True, v=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.runtime._mine.discard(self.container.id)

    def describe(self) -> dict:
        d = {"container_id": self.container.id, "container_name": self.container.name,
             "image": self.container.attrs.get("Config", {}).get("Image"),
             "image_id": self.container.attrs.get("Image"), "pid": self.pid,
             "cpus": self.spec.cpus, "cpuset_cpus": ",".join(str(x) for x in self.spec.cpus),
             "cpu_quota": self.spec.cpu_quota, "cfs_period_us_requested": self.spec.cfs_period_us,
             "network_mode": "host", "scenario_mount": f"{self.spec.scenario.dir} (read-only, same path)",
             "mounts": {p: f"{m}, same path" for p, m in self.spec.mounts.items()},
             "cpu_accounting": "cgroup file (cumulative usage)" if self.cgroup else "stats API total_usage",
             "memory_accounting": "pss (proportional set size, /proc/PID/smaps_rollup, summed over the "
                                  "container's processes)" if getattr(self, "memory_kind", "") == "pss" else
                                  "anonymous + mapped file (v1 total_rss + total_mapped_file, v2 anon + "
                                  "file_mapped; not the page cache of written files)"
                                  + (", cgroup files" if self.cgroup else ", stats API")}
        if self.cgroup is not None:
            d.update(self.cgroup.describe())
        try:
            applied = self.quota_applied()
        except OSError:
            applied = None
        if applied is not None:
            d["cpu_quota_applied"], d["cfs_period_us"] = applied
        return d


def _owner(pid: int | None = None) -> str:
    return owner_tag(pid)


def _owner_alive(owner: str) -> bool:
    """Whether the harness process named by an owner label still runs."""
    return owner_alive(owner)


def _container_name(key: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_.-]", "-", key)
    return name if name[:1].isalnum() else "lb" + name


# ------------------------------------------------------------------ the runtime

class DockerRuntime(Runtime):
    name = "docker"

    def __init__(self, auto_bases: bool = True):
        self._client = None
        self.auto_bases = auto_bases
        self.images: dict[str, dict] = {}          # impl id -> image facts
        self._mine: set[str] = set()                # containers created by this process, not yet removed
        self._native = None                         # image-less services: native processes
        atexit.register(self._atexit)

    @property
    def client(self):
        if self._client is None:
            self._client = images.client()
        return self._client

    def available(self) -> tuple[bool, str]:
        try:
            c = self.client
            v = c.version()
            return True, f"Docker {v.get('Version')} (API {v.get('ApiVersion')})"
        except LangbenchError as exc:
            return False, str(exc)

    # -- images
    def base_ref(self, impl: Implementation) -> str:
        override = os.environ.get(BASE_ENV + re.sub(r"[^A-Z0-9]", "_", impl.name.upper()))
        if override:
            return override
        return dockerfile_base(impl.dir / "Dockerfile") or "scratch"

    def prepare(self, impl: Implementation, scenario: Scenario, log_dir: Path) -> dict:
        dockerfile = impl.dir / "Dockerfile"
        if not dockerfile.is_file():
            raise ToolError(f"{impl.dir}: no Dockerfile (the docker runtime builds the image from it)")
        c = self.client
        log_path = log_dir / f"image-{impl.scenario}-{impl.name}.log"
        base = self.base_ref(impl)
        override = base != (dockerfile_base(dockerfile) or "scratch")
        if base != "scratch" and images.image_or_none(c, base) is None and base in images.LOCAL_TAGS:
            if not self.auto_bases:
                raise ToolError(f"base image {base} is missing: run `langbench images`")
            images.build_all(log_dir=log_dir)
        digest = builder.source_hash(impl, scenario)
        repo = f"langbench/{_slug(impl.scenario)}-{_slug(impl.name)}"
        tag = f"{repo}:{digest}"
        labels = {IMAGE_LABEL: impl.id, "langbench.source_hash": digest,
                  "langbench.base_ref": base}
        t0 = time.monotonic()
        try:
            image_id, cached = images.run_build(
                c, log_path, tag, labels, {"BASE_IMAGE": base} if override else None,
                path=str(impl.dir), pull=False)
        except ToolError as exc:
            raise ToolError(f"image build failed: {exc}") from None
        build_s = time.monotonic() - t0
        img = c.images.get(image_id)
        self._prune_old(repo, img.id)
        info = {"id": img.id, "tag": tag, "size_mb": img.attrs["Size"] / 1e6,
                "size_bytes": img.attrs["Size"], "build_s": build_s, "cached": cached,
                "log": str(log_path), "base": describe_base(c, base, override)}
        self.images[impl.id] = info
        return {"image": info}

    def prepare_service(self, svc: Service, scenario: Scenario, log_dir: Path) -> dict | None:
        """Build a scenario service's image (after its setup has fetched what
        the image copies), cached by a hash of its build context."""
        img_spec = svc.docker
        if img_spec is None:
            return None          # declares no image: a native process under this runtime too
        c = self.client
        base = dockerfile_base(img_spec.dockerfile) or "scratch"
        if base != "scratch" and images.image_or_none(c, base) is None and base in images.LOCAL_TAGS:
            if not self.auto_bases:
                raise ToolError(f"base image {base} is missing: run `langbench images`")
            images.build_all(log_dir=log_dir)
        h = hashlib.sha256()
        for f in builder._files(img_spec.context, set()):
            h.update(str(f.relative_to(img_spec.context)).encode() + b"\0" + f.read_bytes() + b"\0")
        digest = h.hexdigest()[:16]
        repo = f"langbench/svc-{_slug(scenario.name)}-{_slug(svc.name)}"
        tag = f"{repo}:{digest}"
        log_path = log_dir / f"image-{scenario.name}-service-{svc.name}.log"
        t0 = time.monotonic()
        try:
            image_id, cached = images.run_build(
                c, log_path, tag, {SERVICE_LABEL: f"{scenario.name}/{svc.name}", "langbench.source_hash": digest,
                                   "langbench.base_ref": base},
                path=str(img_spec.context), dockerfile=str(img_spec.dockerfile.relative_to(img_spec.context)),
                pull=False)
        except ToolError as exc:
            raise ToolError(f"service {svc.name}: image build failed: {exc}") from None
        img = c.images.get(image_id)
        self._prune_old(repo, img.id)
        return {"id": img.id, "tag": tag, "size_mb": img.attrs["Size"] / 1e6, "size_bytes": img.attrs["Size"],
                "build_s": time.monotonic() - t0, "cached": cached, "log": str(log_path),
                "base": describe_base(c, base, False)}

    def start_service(self, spec: LaunchSpec, svc: Service, prepared: dict | None) -> ServerHandle:
        """A service with an image runs as a container of it, its data folder
        (the spec's mounts) read-write at the same path; one without stays a
        native process, as under the process runtime."""
        if prepared is None:
            from .process import ProcessRuntime  # noqa: PLC0415
            if self._native is None:
                self._native = ProcessRuntime()
            return self._native.start(spec)
        spec.labels = {**spec.labels, SERVICE_LABEL: f"{spec.scenario.name}/{svc.name}"}
        return self.start_image(spec, prepared["id"], spec.image_command)

    def start_image(self, spec: LaunchSpec, image_ref: str, command: list[str] | None = None) -> DockerHandle:
        """A container of a given image (a scenario service's)."""
        try:
            return DockerHandle(self, spec, image_ref, command)
        except LangbenchError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ServerError(f"docker: {type(exc).__name__}: {str(exc)[:200]}") from None

    def _prune_old(self, repo: str, keep_id: str) -> None:
        """Remove this implementation's images of older sources (disk hygiene)."""
        try:
            for img in self.client.images.list(name=repo):
                if img.id != keep_id:
                    for t in img.tags:
                        if t.startswith(repo + ":"):
                            self.client.images.remove(t, noprune=False)
        except Exception:  # noqa: BLE001 - in use by a container, or gone
            pass

    def image_ref(self, impl: Implementation) -> str:
        info = self.images.get(impl.id)
        if info is None:
            raise ServerError(f"{impl.id}: no image prepared for it")
        return info["id"]

    # -- containers
    def start(self, spec: LaunchSpec) -> DockerHandle:
        """A container of the implementation's image; a node that declares a
        container command runs it instead of the image's CMD."""
        try:
            return DockerHandle(self, spec, self.image_ref(spec.impl), spec.image_command)
        except LangbenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - the daemon went away, a request timed out...
            raise ServerError(f"docker: {type(exc).__name__}: {str(exc)[:200]}") from None

    def cleanup_leftovers(self, current_run: str | None = None) -> list[str]:
        """Remove the containers of other runs whose harness process is gone
        (a run killed with SIGKILL, a crashed machine); the containers of a
        run still in progress in another process are left alone."""
        removed = []
        for ctr in self.client.containers.list(all=True, filters={"label": RUN_LABEL}):
            labels = ctr.labels or {}
            run = labels.get(RUN_LABEL)
            if current_run is not None and run == current_run:
                continue
            if _owner_alive(labels.get(OWNER_LABEL, "")):
                continue
            try:
                ctr.remove(force=True, v=True)
                removed.append(f"container {ctr.name} ({ctr.short_id}) of run {run}")
            except Exception:  # noqa: BLE001 - removed meanwhile
                pass
        # services without an image ran as native processes: theirs too
        from .process import ProcessRuntime  # noqa: PLC0415
        removed += ProcessRuntime().cleanup_leftovers(current_run)
        return removed

    def _atexit(self) -> None:
        for cid in list(self._mine):
            try:
                self.client.containers.get(cid).remove(force=True, v=True)
            except Exception:  # noqa: BLE001
                pass
        self._mine.clear()

    def describe(self) -> dict:
        d = {"name": self.name,
             "network": "host network; servers bind 127.0.0.1",
             "cpu_pinning": "cpuset_cpus",
             "cpu_quota_mechanism": "cpu_period + cpu_quota (CFS quota over the profile's period)",
             "cpu_accounting": "the container cgroup's cumulative usage counter, read from the cgroup file "
                               "(stats API where the file cannot be read)",
             "memory": "proportional set size (PSS) summed over the container's processes (host "
                       "/proc/PID/smaps_rollup), as the process runtime; where unreadable, anonymous memory + "
                       "mapped files of the container's cgroup (never docker stats' usage minus inactive file, "
                       "which counts the page cache of files it wrote)",
             "scenario_files": "the scenario folder mounted read-only at the same path",
             "privileges": "none: all capabilities dropped, no-new-privileges"}
        try:
            info = self.client.info()
            v = self.client.version()
            d.update(docker_version=v.get("Version"), api_version=v.get("ApiVersion"),
                     cgroup_version=info.get("CgroupVersion"), cgroup_driver=info.get("CgroupDriver"),
                     storage_driver=info.get("Driver"))
        except Exception:  # noqa: BLE001
            pass
        return d


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9_.-]", "-", s.lower())


def dockerfile_base(path: Path) -> str | None:
    """The default of `ARG BASE_IMAGE=...` in a Dockerfile (None when absent)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    m = re.search(r"^\s*ARG\s+BASE_IMAGE\s*=\s*(\S+)", text, re.M | re.I)
    if m:
        return m.group(1).strip("\"'")
    m = re.search(r"^\s*FROM\s+(\S+)", text, re.M | re.I)
    return m.group(1) if m else None


def describe_base(c, ref: str, override: bool) -> dict:
    d = {"ref": ref, "kind": "override (LANGBENCH_BASE_IMAGE_*)" if override else "Dockerfile default"}
    if ref == "scratch":
        d.update(id=None, size_mb=0.0, origin="empty (scratch)")
        return d
    img = images.image_or_none(c, ref)
    if img is not None:
        labels = img.labels or {}
        d.update(id=img.id, size_mb=img.attrs["Size"] / 1e6,
                 origin=labels.get(images.ORIGIN_LABEL) or "registry image",
                 local_ca=labels.get("langbench.base.local_ca") or None)
    return d

RUNTIME = DockerRuntime
