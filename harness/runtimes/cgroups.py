"""A cgroup per native server: a CPU quota and exact CPU accounting.

Supports cgroup v2 (unified) and v1 (separate cpu and cpuacct hierarchies).
When neither is writable (not root, read-only /sys/fs/cgroup), `create`
returns None and the caller falls back to psutil (recorded in the results).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "langbench"
DEFAULT_PERIOD_US = 10_000


def read_throttling(stat_file: Path, version: int) -> dict:
    """CFS bandwidth counters of a cgroup: periods, throttled periods, throttled
    seconds (v1 cpu.stat throttled_time in ns, v2 throttled_usec)."""
    st = {}
    for line in stat_file.read_text().splitlines():
        k, _, v = line.partition(" ")
        if v.strip().isdigit():
            st[k] = int(v)
    throttled = st["throttled_time"] / 1e9 if version == 1 else st.get("throttled_usec", 0) / 1e6
    return {"nr_periods": st.get("nr_periods", 0), "nr_throttled": st.get("nr_throttled", 0),
            "throttled_s": throttled}


def read_quota(cpu_dir: Path, version: int) -> tuple[float | None, int]:
    """The CFS quota in force (cores, None = no cap) and its period in µs, read back from the files."""
    if version == 2:
        quota, period = (cpu_dir / "cpu.max").read_text().split()
        return (None if quota == "max" else int(quota) / int(period)), int(period)
    quota = int((cpu_dir / "cpu.cfs_quota_us").read_text())
    period = int((cpu_dir / "cpu.cfs_period_us").read_text())
    return (None if quota < 0 else quota / period), period


@dataclass
class Cgroup:
    version: int
    dirs: list[Path]          # every directory the process must join
    cpu_dir: Path             # where the quota is written
    acct_dir: Path            # where usage is read

    def add(self, pid: int) -> None:
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(pid))

    def cpu_seconds(self) -> float:
        if self.version == 2:
            for line in (self.acct_dir / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
            raise OSError("cpu.stat has no usage_usec")
        return int((self.acct_dir / "cpuacct.usage").read_text()) / 1e9

    def pids(self) -> list[int]:
        out: set[int] = set()
        for d in self.dirs:
            try:
                out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return sorted(out)

    def remove(self) -> bool:
        """Remove the cgroup's folders; False while one is still busy (a
        process in it, or one that has exited and is not yet reaped)."""
        gone = True
        for d in self.dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                gone = False
        return gone

    def throttling(self) -> dict:
        return read_throttling(self.cpu_dir / "cpu.stat", self.version)

    def quota(self) -> tuple[float | None, int]:
        return read_quota(self.cpu_dir, self.version)

    def describe(self) -> dict:
        quota, period = self.quota()
        return {"cgroup_version": self.version, "cgroup": str(self.cpu_dir),
                "cpu_quota_applied": quota, "cfs_period_us": period}


def _v1_mount(controller: str) -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        sep = parts.index("-")
        fstype, opts = parts[sep + 1], parts[sep + 3] if len(parts) > sep + 3 else ""
        if fstype == "cgroup" and controller in opts.split(","):
            return Path(parts[4])
    return None


def detect() -> tuple[int, dict[str, Path]] | None:
    """(version, {controller: mount}) for a usable hierarchy, or None."""
    try:
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            if "cpu" in (CGROUP_ROOT / "cgroup.controllers").read_text().split():
                return 2, {"cpu": CGROUP_ROOT}
            return None
        cpu, acct = _v1_mount("cpu"), _v1_mount("cpuacct")
        if cpu and acct:
            return 1, {"cpu": cpu, "cpuacct": acct}
    except OSError:
        pass
    return None


def create(name: str, quota_cores: float | None, period_us: int = DEFAULT_PERIOD_US) -> Cgroup | None:
    found = detect()
    if found is None:
        return None
    version, mounts = found
    try:
        if version == 2:
            parent = CGROUP_ROOT / PARENT
            parent.mkdir(exist_ok=True)
            _enable_v2_cpu(CGROUP_ROOT)
            _enable_v2_cpu(parent)
            d = parent / name
            d.mkdir(exist_ok=True)
            quota = "max" if quota_cores is None else str(int(quota_cores * period_us))
            (d / "cpu.max").write_text(f"{quota} {period_us}")
            return Cgroup(2, [d], d, d)
        cpu_dir = mounts["cpu"] / PARENT / name
        acct_dir = mounts["cpuacct"] / PARENT / name
        dirs = [cpu_dir] if cpu_dir == acct_dir else [cpu_dir, acct_dir]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        # The quota first goes to -1 so that a shorter period never meets an
        # old quota larger than it (the kernel refuses quota > period * cpus).
        (cpu_dir / "cpu.cfs_quota_us").write_text("-1")
        (cpu_dir / "cpu.cfs_period_us").write_text(str(period_us))
        quota = -1 if quota_cores is None else int(quota_cores * period_us)
        (cpu_dir / "cpu.cfs_quota_us").write_text(str(quota))
        return Cgroup(1, dirs, cpu_dir, acct_dir)
    except OSError:
        return None


def _enable_v2_cpu(d: Path) -> None:
    ctl = d / "cgroup.subtree_control"
    if "cpu" not in ctl.read_text().split():
        ctl.write_text("+cpu")


def leftovers() -> list[Cgroup]:
    """Every langbench cgroup that exists now (used to clean up a killed run)."""
    found = detect()
    if found is None:
        return []
    version, mounts = found
    out = []
    if version == 2:
        parent = CGROUP_ROOT / PARENT
        for d in sorted(parent.glob("*/")) if parent.is_dir() else []:
            out.append(Cgroup(2, [d], d, d))
        return out
    names: set[str] = set()
    for m in mounts.values():
        p = m / PARENT
        if p.is_dir():
            names.update(x.name for x in p.iterdir() if x.is_dir())
    for n in sorted(names):
        cpu_dir, acct_dir = mounts["cpu"] / PARENT / n, mounts["cpuacct"] / PARENT / n
        dirs = [d for d in {cpu_dir, acct_dir} if d.is_dir()]
        out.append(Cgroup(1, dirs, cpu_dir, acct_dir))
    return out

