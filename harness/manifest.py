"""Scenario and implementation manifests: loading, validation, discovery.

A scenario is a folder `scenarios/<name>/` with `scenario.toml`; an
implementation is a folder `implementations/<scenario>/<variant>/` with
`langbench.toml`. Every field is validated here, so that the rest of the
harness can trust these objects; a bad field raises ManifestError naming the
file and the field (dotted path).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, ManifestError

SCENARIO_FILE = "scenario.toml"
IMPL_FILE = "langbench.toml"
READINESS_KINDS = ("tcp", "grpc", "http", "command")
LEVEL_KINDS = ("concurrency", "rate")           # the built-in ones; drivers may declare more
LEVEL_PREFIX = {"concurrency": "c", "rate": "r"}
SINGLE_NODE = "server"                          # the one node of an implementation with [run]
PROFILE_FIELDS = ("duration_s", "warmup_s")


# --------------------------------------------------------------------------- model

@dataclass(frozen=True)
class Readiness:
    kind: str
    params: dict[str, Any]
    timeout_s: float


@dataclass(frozen=True)
class CommandSpec:
    command: list[str]
    timeout_s: float


@dataclass(frozen=True)
class VerifyStep:
    """One verification command; `stop_services` are stopped while it runs."""

    name: str
    command: list[str]
    timeout_s: float
    stop_services: list[str]
    # run on the first server run of each implementation in a run only (a
    # slow check of behaviour that cannot change between server runs)
    once: bool = False


@dataclass(frozen=True)
class Service:
    """A dependency the harness starts before a scenario's servers (a broker...)."""

    name: str
    setup: list[str] | None        # run once per run before the first start (fetch, install)
    command: list[str]
    env: dict[str, str]
    ports: list[str]               # names of the ports the harness assigns: {svc.NAME.PORT}
    readiness: Readiness
    setup_timeout_s: float
    docker: "ServiceImage | None" = None   # how the docker runtime runs it (None: a process there too)


@dataclass(frozen=True)
class ServiceImage:
    """A service's container under the docker runtime: an image built from a
    Dockerfile in the scenario folder (after the service's setup), run with
    the service's env on the host network; its data folder `{svc.NAME.dir}`
    is mounted read-write at the same path."""

    dockerfile: Path               # absolute
    context: Path                  # absolute build context (default: the Dockerfile's folder)
    command: list[str] | None      # overrides the image's CMD (None: the image's own)


FAULT_ACTIONS = ("stop", "kill", "start", "restart")


@dataclass(frozen=True)
class Fault:
    """One action of a fault schedule: at a fraction of every load window of
    the workload, stop (SIGTERM), kill (SIGKILL), start or restart a target
    (a scenario service, or a node of the implementation's topology)."""

    at: float          # 0 < at < 1: fraction of the level's duration after the tool started
    action: str        # stop | kill | start | restart
    target: str

    def to_json(self) -> dict:
        return {"at": self.at, "action": self.action, "target": self.target}


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    driver: str
    params: dict[str, Any]
    faults: list[Fault] = field(default_factory=list)
    # environment the server runs with for this workload (e.g. RECORD = "0"):
    # workloads with different server_env run on different server runs
    server_env: dict[str, str] = field(default_factory=dict)
    # the level kinds this workload runs (empty: every kind its driver takes)
    levels: tuple[str, ...] = ()
    # seconds per level by profile name, instead of the profile's duration_s
    durations: dict[str, float] = field(default_factory=dict)
    # a server run of its own, started for this workload alone (a ramp that
    # must begin from a server no other workload has loaded)
    own_server: bool = False

    @property
    def mode(self) -> str:
        """A short name of the server run: the workload's name when it has its
        own server, then the server_env ('' for none): RECORD=0 -> 'record0'."""
        parts = [self.name] if self.own_server else []
        return "-".join(parts + [f"{k}{v}".lower() for k, v in sorted(self.server_env.items())])

    def kinds(self, driver_kinds: tuple[str, ...]) -> tuple[str, ...]:
        """The level kinds this workload runs, of those its driver takes."""
        return tuple(k for k in driver_kinds if not self.levels or k in self.levels)

    def duration_s(self, profile: str, default: float) -> float:
        return self.durations.get(profile, default)


@dataclass(frozen=True)
class ProfileLevels:
    """The load levels of one profile for one scenario: concurrency and rate,
    and any other level kind a driver declares (e.g. `connections = [1000,
    5000]` for a connection ramp). A workload runs the levels of the kinds
    its driver takes."""

    concurrency: list[int]
    rate: list[int]
    duration_s: float
    warmup_s: float
    other: dict[str, list[int]] = field(default_factory=dict)

    def levels(self, kinds: tuple[str, ...] | None = None) -> list["Level"]:
        out = [Level("concurrency", c) for c in self.concurrency]
        out += [Level("rate", r, concurrency=max(self.concurrency or [16])) for r in self.rate]
        for kind, values in self.other.items():
            out += [Level(kind, v) for v in values]
        return [lv for lv in out if kinds is None or lv.kind in kinds]

    def kinds(self) -> set[str]:
        return ({"concurrency"} if self.concurrency else set()) | ({"rate"} if self.rate else set()) \
            | {k for k, v in self.other.items() if v}


@dataclass(frozen=True)
class Level:
    """One load level: a closed-loop concurrency or an open-loop rate."""

    kind: str           # "concurrency" | "rate" | a kind a driver declares
    value: int
    concurrency: int | None = None   # workers behind an open-loop rate

    @property
    def key(self) -> str:
        prefix = LEVEL_PREFIX.get(self.kind)
        return f"{prefix}{self.value}" if prefix else f"{self.kind}-{self.value}"

    def to_json(self) -> dict:
        d = {"kind": self.kind, "value": self.value, "key": self.key}
        if self.concurrency is not None:
            d["concurrency"] = self.concurrency
        return d


@dataclass(frozen=True)
class Topology:
    """A scenario whose implementations run as several named nodes (A -> B ->
    C): the order they start in, the one the load tool and the checks talk
    to, and per-node readiness (default: the scenario's)."""

    nodes: list[str]
    entry: str
    readiness: dict[str, Readiness]
    quota: str = "each"        # each: every node gets the profile's CPU quota; split: they share it equally
    # mixed-language topologies a full run adds: node -> implementation name
    mixes: list[dict[str, str]] = field(default_factory=list)
    mix_trials: int | None = None   # trials of the declared mixes (None: as many as the run's)

    def to_json(self) -> dict:
        return {"nodes": self.nodes, "entry": self.entry, "quota": self.quota, "mix_trials": self.mix_trials}

    def node_quota(self, profile_quota: float | None) -> float | None:
        if profile_quota is None or self.quota == "each":
            return profile_quota
        return profile_quota / len(self.nodes)


@dataclass(frozen=True)
class NodeSpec:
    """How one node of an implementation runs: its command (host side, the
    process runtime), env, and optionally the command its container runs
    instead of the image's CMD (docker runtime)."""

    name: str
    command: list[str]
    env: dict[str, str]
    container_command: list[str] | None = None
    owner: "Implementation | None" = None    # a mixed topology: the implementation this node comes from


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    protocol: str
    dir: Path
    env: dict[str, str]
    readiness: Readiness
    verify: list[VerifyStep]
    interop: CommandSpec | None      # timeout for each client run; None = no interop
                                     # (kind "files": command = the reference reader)
    services: list[Service]
    before_instance: CommandSpec | None   # run before each server start (fresh topic...)
    after_load: CommandSpec | None        # run after every load phase (event counts...)
    after_stop: CommandSpec | None        # run once the server has stopped (files it finalised...)
    workloads: list[Workload]
    profiles: dict[str, ProfileLevels]
    manifest_path: Path
    python_requires: list[str] = field(default_factory=list)   # packages its checks need (PEP 508)
    topology: Topology | None = None      # None: one node per implementation (its [run])
    # "client": each implementation's client calls each server; "files": each
    # implementation's reader reads each server's files after it stopped and
    # must print what the reference reader (interop.command) prints
    interop_kind: str = "client"
    # [report] baseline: the language every other one's throughput is divided
    # by in the report (blackhole: "go", the original); None: no ratio column
    report_baseline: str | None = None

    def modes(self) -> list[tuple[dict[str, str], list[str]]]:
        """The server runs one trial takes: workloads grouped by their
        server_env, in the order they are declared."""
        groups: list[tuple[dict[str, str], list[str], bool]] = []
        for w in self.workloads:
            for env, names, own in groups:
                if env == w.server_env and not own and not w.own_server:
                    names.append(w.name)
                    break
            else:
                groups.append((dict(w.server_env), [w.name], w.own_server))
        return [(env, names) for env, names, _ in groups] or [({}, [])]

    @property
    def node_names(self) -> list[str]:
        return self.topology.nodes if self.topology else [SINGLE_NODE]

    @property
    def entry(self) -> str:
        return self.topology.entry if self.topology else SINGLE_NODE

    def workload(self, name: str) -> Workload:
        for w in self.workloads:
            if w.name == name:
                return w
        raise InputError(f"scenario {self.name}: no workload named '{name}'")


@dataclass(frozen=True)
class Implementation:
    scenario: str
    name: str
    language: str
    framework: str
    description: str
    dir: Path
    build: CommandSpec | None
    artifacts: list[str]
    requires: list[str]
    exclude: list[str]
    run: list[str]
    run_env: dict[str, str]
    client: list[str] | None
    tuning: dict[str, str]
    manifest_path: Path
    node_specs: dict[str, NodeSpec] = field(default_factory=dict)   # [nodes.NAME]; empty: one node, [run]
    parts: list["Implementation"] = field(default_factory=list)     # a mixed topology: what it is made of
    generated: list[str] = field(default_factory=list)   # [effort] generated: globs of generated files git tracks

    @property
    def id(self) -> str:
        return f"{self.scenario}/{self.name}"

    def node(self, name: str) -> NodeSpec:
        """The spec of one node; the single node of a [run] implementation is SINGLE_NODE."""
        if self.node_specs:
            return self.node_specs[name]
        return NodeSpec(SINGLE_NODE, list(self.run), dict(self.run_env))


@dataclass
class Catalog:
    """Everything found on disk under one project root."""

    root: Path
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    implementations: dict[str, list[Implementation]] = field(default_factory=dict)

    def scenario(self, name: str) -> Scenario:
        if name not in self.scenarios:
            known = ", ".join(sorted(self.scenarios)) or "none"
            raise InputError(f"unknown scenario '{name}' (known: {known})")
        return self.scenarios[name]

    def select(self, scenarios: list[str] | None, impls: list[str] | None,
               workloads: list[str] | None = None) -> list[tuple[Scenario, list[Implementation]]]:
        """Scenarios, implementations and workloads chosen by name; unknown
        names are errors. An implementation is named by its folder (`go`: in
        every scenario), its language (`go`: every Go variant too) or its id
        (`ws-echo/go`: that one alone)."""
        from dataclasses import replace as _replace  # noqa: PLC0415
        names = scenarios or sorted(self.scenarios)
        chosen = []
        all_impls = [i for lst in self.implementations.values() for i in lst]
        known_names = {i.name for i in all_impls} | {i.language for i in all_impls} | {i.id for i in all_impls}
        for wanted in impls or []:
            if wanted not in known_names:
                known = ", ".join(sorted({i.name for i in all_impls})) or "none"
                raise InputError(f"unknown implementation '{wanted}' (known: {known})")
        for name in names:
            sc = self.scenario(name)
            lst = [i for i in self.implementations.get(name, [])
                   if not impls or i.name in impls or i.language in impls or i.id in impls]
            if workloads:
                kept = [w for w in sc.workloads if w.name in workloads]
                if not kept:
                    continue
                sc = _replace(sc, workloads=kept)
            # a scenario's declared mixed topologies join a run of all its
            # implementations (not one that names some with --impl)
            if sc.topology is not None and not impls:
                every = self.implementations.get(name, [])
                names_in = {i.name for i in every}
                lst = lst + [mix(sc, every, m) for m in sc.topology.mixes if set(m.values()) <= names_in]
            if lst:
                chosen.append((sc, lst))
        for wanted in workloads or []:
            if not any(wanted == w.name for sc, _ in chosen for w in sc.workloads):
                raise InputError(f"unknown workload '{wanted}' in the selected scenarios (known: "
                                 f"{', '.join(sorted({w.name for n in names for w in self.scenario(n).workloads}))})")
        if not chosen:
            raise InputError("nothing to run: no implementation matches the selection")
        return chosen


# --------------------------------------------------------------------------- validation helpers

class _Table:
    """A TOML table with the file and dotted prefix for error messages."""

    def __init__(self, data: dict, path: Path, prefix: str = ""):
        self.data = data
        self.path = path
        self.prefix = prefix

    def _f(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def err(self, key: str, message: str) -> ManifestError:
        return ManifestError(self.path, self._f(key), message)

    def check_keys(self, allowed: set[str]) -> None:
        for key in self.data:
            if key not in allowed:
                raise self.err(key, f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def get(self, key: str, kind: type | tuple, required: bool = False, default: Any = None) -> Any:
        if key not in self.data:
            if required:
                raise self.err(key, "missing")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            raise self.err(key, f"expected {_type_name(kind)}, got {type(value).__name__} {value!r}")
        if isinstance(value, str) and required and not value.strip():
            raise self.err(key, "must not be empty")
        return value

    def str_list(self, key: str, required: bool = False, nonempty: bool = False) -> list[str]:
        value = self.get(key, list, required=required, default=[])
        if not all(isinstance(v, str) for v in value):
            raise self.err(key, "expected a list of strings")
        if nonempty and not value:
            raise self.err(key, "must not be empty")
        return list(value)

    def int_list(self, key: str) -> list[int]:
        value = self.get(key, list, default=[])
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            raise self.err(key, "expected a list of positive integers")
        return list(value)

    def str_map(self, key: str) -> dict[str, str]:
        value = self.get(key, dict, default={})
        for k, v in value.items():
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise self.err(f"{key}.{k}", f"expected a string, got {type(v).__name__}")
        return {k: str(v) for k, v in value.items()}

    def sub(self, key: str, required: bool = False) -> "_Table | None":
        value = self.get(key, dict, required=required)
        if value is None:
            return None
        return _Table(value, self.path, self._f(key) + ".")

    def positive(self, key: str, default: float) -> float:
        value = self.get(key, float, default=default)
        if value <= 0:
            raise self.err(key, f"must be positive, got {value}")
        return value


def _type_name(kind: type | tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list",
             dict: "a table", bool: "true or false"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(path, "(syntax)", f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ManifestError(path, "(file)", f"cannot read: {exc.strerror}") from None


def _command(t: _Table, key: str, default_timeout: float) -> CommandSpec | None:
    sub = t.sub(key)
    if sub is None:
        return None
    sub.check_keys({"command", "timeout_s", "enabled"})
    if sub.get("enabled", bool, default=True) is False:
        return None
    cmd = sub.str_list("command", required=key != "interop", nonempty=key != "interop")
    return CommandSpec(cmd, sub.positive("timeout_s", default_timeout))


def _report_baseline(t: _Table) -> str | None:
    sub = t.sub("report")
    if sub is None:
        return None
    sub.check_keys({"baseline"})
    return sub.get("baseline", str)


INTEROP_KINDS = ("client", "files")


def _interop_kind(t: _Table) -> str:
    sub = t.sub("interop")
    kind = sub.get("kind", str, default="client") if sub is not None else "client"
    if kind not in INTEROP_KINDS:
        raise sub.err("kind", f"'{kind}' is not one of {', '.join(INTEROP_KINDS)}")
    return kind


def _interop(t: _Table) -> CommandSpec | None:
    """[interop]: enabled, timeout_s, and for kind = "files" the reference
    reader's command (it gets {interop_dir})."""
    sub = t.sub("interop")
    if sub is None:
        return None
    sub.check_keys({"command", "timeout_s", "enabled", "kind"})
    if sub.get("enabled", bool, default=True) is False:
        return None
    files = _interop_kind(t) == "files"
    cmd = sub.str_list("command", required=files, nonempty=files)
    return CommandSpec(cmd, sub.positive("timeout_s", 60.0))


def _readiness(r: _Table) -> Readiness:
    r.check_keys({"kind", "timeout_s", "method", "request_b64", "path", "body", "content_type",
                  "expect_status", "command", "port", "counts_as_ok"})
    kind = r.get("kind", str, required=True)
    if kind not in READINESS_KINDS:
        raise r.err("kind", f"'{kind}' is not one of {', '.join(READINESS_KINDS)}")
    if kind == "grpc":
        r.get("method", str, required=True)
        r.get("request_b64", str, default="")
    if kind == "command":
        r.str_list("command", required=True, nonempty=True)
    if kind == "http":
        r.get("path", str, default="/")
        r.get("method", str, default="GET")
        r.get("body", str, default="")
        r.get("expect_status", int, default=0)
    params = {k: v for k, v in r.data.items() if k not in ("kind", "timeout_s")}
    return Readiness(kind, params, r.positive("timeout_s", 60.0))


def _verify_steps(t: _Table, services: list[str]) -> list[VerifyStep]:
    raw = t.data.get("verify")
    if raw is None:
        return []
    items = [raw] if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise t.err("verify", "expected a table or a list of tables")
    steps = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise t.err(f"verify[{i}]", "expected a table")
        v = _Table(item, t.path, "verify." if isinstance(raw, dict) else f"verify[{i}].")
        v.check_keys({"name", "command", "timeout_s", "stop_services", "once"})
        stop = v.str_list("stop_services")
        for name in stop:
            if name not in services:
                raise v.err("stop_services", f"no service named '{name}'")
        steps.append(VerifyStep(v.get("name", str, default=f"step{i + 1}"),
                                v.str_list("command", required=True, nonempty=True),
                                v.positive("timeout_s", 60.0), stop, v.get("once", bool, default=False)))
    return steps


def _service_image(t: "_Table | None", sc_dir: Path) -> ServiceImage | None:
    if t is None:
        return None
    t.check_keys({"dockerfile", "context", "command"})
    rel = t.get("dockerfile", str, required=True)
    dockerfile = (sc_dir / rel).resolve()
    if not dockerfile.is_relative_to(sc_dir.resolve()):
        raise t.err("dockerfile", f"'{rel}' lies outside the scenario folder")
    if not dockerfile.is_file():
        raise t.err("dockerfile", f"no file '{rel}' in the scenario folder")
    crel = t.get("context", str, default=None)
    context = (sc_dir / crel).resolve() if crel is not None else dockerfile.parent
    if not context.is_relative_to(sc_dir.resolve()) or not context.is_dir():
        raise t.err("context", f"'{crel}' is not a folder inside the scenario folder")
    if not dockerfile.is_relative_to(context):
        raise t.err("dockerfile", f"'{rel}' lies outside its build context")
    return ServiceImage(dockerfile, context, t.str_list("command") or None)


def _faults(w: _Table, services: list[str], nodes: list[str]) -> list[Fault]:
    """faults = [{at = 0.4, action = "stop", target = "kafka"}, {at = 0.6, action = "start", target = "kafka"}]"""
    raw = w.get("faults", list, default=[])
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise w.err(f"faults[{i}]", "expected a table {at, action, target}")
        f = _Table(item, w.path, f"{w.prefix}faults[{i}].")
        f.check_keys({"at", "action", "target"})
        at = f.get("at", float, required=True)
        if not 0 < at < 1:
            raise f.err("at", f"a fraction of the load window strictly between 0 and 1, got {at}")
        action = f.get("action", str, required=True)
        if action not in FAULT_ACTIONS:
            raise f.err("action", f"'{action}' is not one of {', '.join(FAULT_ACTIONS)}")
        target = f.get("target", str, required=True)
        if target not in services and target not in nodes:
            raise f.err("target", f"no service or node named '{target}' "
                                  f"(services: {', '.join(services) or 'none'}; nodes: {', '.join(nodes) or 'none'})")
        out.append(Fault(at, action, target))
    return out


def _workload_drivers(raw: list, workloads: list[Workload], path: Path) -> dict:
    """Each workload's driver, its params validated by the driver itself."""
    from .drivers import get_driver  # noqa: PLC0415 - drivers import this module
    out = {}
    for i, w in enumerate(workloads):
        t = _Table(raw[i], path, f"workloads[{i}].")
        try:
            d = get_driver(w.driver)
        except InputError as exc:
            raise t.err("driver", str(exc)) from None
        problems = d.validate(w.params, path.parent)
        if problems:
            field_, message = problems[0]
            raise t.err(field_, message)
        for k in w.levels:
            if k not in d.level_kinds:
                raise t.err("levels", f"driver {d.name} takes no '{k}' levels (it takes "
                                      f"{', '.join(d.level_kinds)})")
        out[w.name] = d
    return out


def _topology(t: _Table, default_readiness: Readiness) -> Topology | None:
    """[topology] nodes = ["a", "b", "c"], entry = "a", readiness.b = {...},
    mixes = ["a=go,b=rust,c=scala", ...]"""
    sub = t.sub("topology")
    if sub is None:
        return None
    sub.check_keys({"nodes", "entry", "readiness", "quota", "mixes", "mix_trials"})
    quota = sub.get("quota", str, default="each")
    if quota not in ("each", "split"):
        raise sub.err("quota", f"'{quota}' is not 'each' (every node the profile's CPU quota) or 'split' "
                               f"(the nodes share it)")
    nodes = sub.str_list("nodes", required=True, nonempty=True)
    for i, n in enumerate(nodes):
        if not n.isidentifier():
            raise sub.err(f"nodes[{i}]", f"'{n}' is not a node name (letters, digits, underscores)")
    if len(set(nodes)) != len(nodes):
        raise sub.err("nodes", "a node is named twice")
    entry = sub.get("entry", str, default=nodes[0])
    if entry not in nodes:
        raise sub.err("entry", f"'{entry}' is not one of the nodes ({', '.join(nodes)})")
    ready = {}
    rt = sub.sub("readiness")
    if rt is not None:
        for name in rt.data:
            if name not in nodes:
                raise rt.err(name, f"no node named '{name}'")
            ready[name] = _readiness(rt.sub(name, required=True))
    mixes = []
    for i, text in enumerate(sub.str_list("mixes")):
        try:
            assignment = parse_assignment(text)
        except InputError as exc:
            raise sub.err(f"mixes[{i}]", str(exc)) from None
        if set(assignment) != set(nodes):
            raise sub.err(f"mixes[{i}]", f"'{text}' must name an implementation for each node "
                                         f"({', '.join(nodes)}) and nothing else")
        mixes.append(assignment)
    mix_trials = sub.get("mix_trials", int, default=None)
    if mix_trials is not None and mix_trials < 1:
        raise sub.err("mix_trials", f"at least 1, got {mix_trials}")
    return Topology(nodes, entry, {n: ready.get(n, default_readiness) for n in nodes}, quota, mixes, mix_trials)


def parse_assignment(text: str) -> dict[str, str]:
    """'a=go,b=rust,c=scala' -> {node: implementation}."""
    out: dict[str, str] = {}
    for part in text.split(","):
        node, sep, impl = part.partition("=")
        if not sep or not node.strip() or not impl.strip():
            raise InputError(f"'{part}' is not NODE=IMPLEMENTATION")
        if node.strip() in out:
            raise InputError(f"node '{node.strip()}' is given twice")
        out[node.strip()] = impl.strip()
    return out


def _python_requires(t: _Table) -> list[str]:
    """[python] requires = ["lz4==4.4.4", ...]: what the scenario's checks and
    tools import beyond the harness; installed by setup (langbench deps)."""
    sub = t.sub("python")
    if sub is None:
        return []
    sub.check_keys({"requires"})
    reqs = sub.str_list("requires")
    from packaging.requirements import InvalidRequirement, Requirement  # noqa: PLC0415
    for i, r in enumerate(reqs):
        try:
            Requirement(r)
        except InvalidRequirement as exc:
            raise sub.err(f"requires[{i}]", f"'{r}' is not a valid requirement: {exc}") from None
    return reqs


# --------------------------------------------------------------------------- loaders

def load_scenario(path: Path) -> Scenario:
    path = Path(path)
    t = _Table(_read_toml(path), path)
    t.check_keys({"name", "title", "description", "protocol", "env", "readiness", "verify",
                  "interop", "workloads", "profiles", "services", "before_instance", "after_load",
                  "after_stop", "python", "topology", "report"})
    name = t.get("name", str, required=True)
    if name != path.parent.name:
        raise t.err("name", f"'{name}' differs from the folder name '{path.parent.name}'")

    readiness = _readiness(t.sub("readiness", required=True))
    topology = _topology(t, readiness)
    services = []
    for i, raw in enumerate(t.get("services", list, default=[])):
        if not isinstance(raw, dict):
            raise t.err(f"services[{i}]", "expected a table")
        sv = _Table(raw, path, f"services[{i}].")
        sv.check_keys({"name", "setup", "command", "env", "ports", "readiness", "setup_timeout_s", "docker"})
        services.append(Service(
            name=sv.get("name", str, required=True), setup=sv.str_list("setup") or None,
            command=sv.str_list("command", required=True, nonempty=True), env=sv.str_map("env"),
            ports=sv.str_list("ports"), readiness=_readiness(sv.sub("readiness", required=True)),
            setup_timeout_s=sv.positive("setup_timeout_s", 900.0),
            docker=_service_image(sv.sub("docker"), path.parent)))
    names = [sv.name for sv in services]
    verify = _verify_steps(t, names)

    workloads = []
    raw_workloads = t.get("workloads", list, required=True)
    if not raw_workloads:
        raise t.err("workloads", "must list at least one workload")
    seen = set()
    for i, raw in enumerate(raw_workloads):
        if not isinstance(raw, dict):
            raise t.err(f"workloads[{i}]", "expected a table")
        w = _Table(raw, path, f"workloads[{i}].")
        w.check_keys({"name", "description", "driver", "params", "faults", "server_env", "levels", "duration_s",
                      "own_server"})
        wname = w.get("name", str, required=True)
        if wname in seen:
            raise w.err("name", f"duplicate workload '{wname}'")
        seen.add(wname)
        durations = {}
        d = w.sub("duration_s")
        if d is not None:
            for prof in d.data:
                durations[prof] = d.positive(prof, 1.0)
        workloads.append(Workload(wname, w.get("description", str, default=""),
                                  w.get("driver", str, required=True), w.get("params", dict, default={}),
                                  _faults(w, names, topology.nodes if topology else []),
                                  w.str_map("server_env"), tuple(w.str_list("levels")), durations,
                                  w.get("own_server", bool, default=False)))

    drivers = _workload_drivers(raw_workloads, workloads, path)
    profiles = {}
    ptable = t.sub("profiles", required=True)
    for pname in ptable.data:
        p = ptable.sub(pname, required=True)
        all_kinds = set().union(*(set(d.level_kinds) for d in drivers.values()))
        for key in p.data:
            if key not in PROFILE_FIELDS and key not in all_kinds:
                raise p.err(key, f"no workload's driver takes '{key}' levels (level kinds here: "
                                 f"{', '.join(sorted(all_kinds))}; other fields: {', '.join(PROFILE_FIELDS)})")
        other = {k: p.int_list(k) for k in p.data if k not in PROFILE_FIELDS and k not in LEVEL_KINDS}
        levels = ProfileLevels(p.int_list("concurrency"), p.int_list("rate"),
                               p.positive("duration_s", 10.0), p.get("warmup_s", float, default=0.0), other)
        if not levels.kinds():
            raise p.err("concurrency", "a profile needs at least one level (concurrency, rate or another kind)")
        for i, w in enumerate(workloads):
            if not levels.kinds() & set(w.kinds(drivers[w.name].level_kinds)):
                raise p.err(next(iter(sorted(levels.kinds()))),
                            f"workload '{w.name}' gets no level: it runs "
                            f"{', '.join(w.kinds(drivers[w.name].level_kinds))} levels")
        profiles[pname] = levels
    for i, w in enumerate(workloads):
        for prof in w.durations:
            if prof not in profiles:
                raise ManifestError(path, f"workloads[{i}].duration_s.{prof}",
                                    f"no profile '{prof}' (profiles: {', '.join(profiles)})")

    return Scenario(
        name=name, title=t.get("title", str, default=name),
        description=t.get("description", str, default=""),
        protocol=t.get("protocol", str, required=True), dir=path.parent.resolve(),
        env=t.str_map("env"), readiness=readiness, verify=verify,
        interop=_interop(t), interop_kind=_interop_kind(t), report_baseline=_report_baseline(t),
        services=services,
        before_instance=_command(t, "before_instance", 120.0),
        after_load=_command(t, "after_load", 120.0), after_stop=_command(t, "after_stop", 120.0),
        python_requires=_python_requires(t), topology=topology, workloads=workloads,
        profiles=profiles,
        manifest_path=path,
    )


def load_implementation(path: Path, scenario: str) -> Implementation:
    path = Path(path)
    t = _Table(_read_toml(path), path)
    t.check_keys({"language", "framework", "description", "build", "run", "nodes", "client", "tuning", "effort"})
    build = t.sub("build")
    artifacts: list[str] = []
    requires: list[str] = []
    exclude: list[str] = []
    build_spec = None
    if build is not None:
        build.check_keys({"command", "artifact", "requires", "exclude", "timeout_s"})
        build_spec = CommandSpec(build.str_list("command", required=True, nonempty=True),
                                 build.positive("timeout_s", 1800.0))
        artifacts = build.str_list("artifact")
        requires = build.str_list("requires")
        exclude = build.str_list("exclude")
    node_specs: dict[str, NodeSpec] = {}
    nodes = t.sub("nodes")
    if nodes is not None:
        if "run" in t.data:
            raise t.err("run", "declare either [run] (one node) or [nodes.NAME] (several), not both")
        for name in nodes.data:
            n = nodes.sub(name, required=True)
            n.check_keys({"command", "env", "container_command"})
            node_specs[name] = NodeSpec(name, n.str_list("command", required=True, nonempty=True),
                                        n.str_map("env"), n.str_list("container_command") or None)
        if not node_specs:
            raise nodes.err("", "declares no node")
        first = next(iter(node_specs.values()))
        run_cmd, run_env = first.command, first.env
    run = t.sub("run", required=nodes is None)
    if run is not None:
        run.check_keys({"command", "env"})
    client = t.sub("client")
    client_cmd = None
    if client is not None:
        client.check_keys({"command"})
        client_cmd = client.str_list("command", required=True, nonempty=True)
    tuning = t.sub("tuning", required=True)
    tuning_map: dict[str, str] = {}
    for k, v in tuning.data.items():
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise tuning.err(k, f"expected a string, got {type(v).__name__}")
        tuning_map[k] = str(v)
    if not tuning_map:
        raise t.err("tuning", "must declare the implementation's tuning (threads, GC, build flags...)")
    effort = t.sub("effort")
    generated: list[str] = []
    if effort is not None:
        effort.check_keys({"generated"})
        generated = effort.str_list("generated")
    return Implementation(
        scenario=scenario, name=path.parent.name,
        language=t.get("language", str, required=True),
        framework=t.get("framework", str, required=True),
        description=t.get("description", str, default=""), dir=path.parent.resolve(),
        build=build_spec, artifacts=artifacts, requires=requires, exclude=exclude,
        run=run.str_list("command", required=True, nonempty=True) if run is not None else run_cmd,
        run_env=run.str_map("env") if run is not None else run_env,
        client=client_cmd, tuning=tuning_map, manifest_path=path, node_specs=node_specs,
        generated=generated,
    )


def _check_nodes(impl: Implementation, sc: Scenario) -> None:
    """An implementation declares exactly the scenario's nodes."""
    if sc.topology is None:
        if impl.node_specs:
            raise ManifestError(impl.manifest_path, "nodes",
                                f"scenario {sc.name} runs one node per implementation: declare [run]")
        return
    if not impl.node_specs:
        raise ManifestError(impl.manifest_path, "run", f"scenario {sc.name} runs the nodes "
                            f"{', '.join(sc.topology.nodes)}: declare [nodes.NAME] for each instead of [run]")
    for name in sc.topology.nodes:
        if name not in impl.node_specs:
            raise ManifestError(impl.manifest_path, f"nodes.{name}", "missing (a node of the scenario's topology)")
    for name in impl.node_specs:
        if name not in sc.topology.nodes:
            raise ManifestError(impl.manifest_path, f"nodes.{name}",
                                f"not a node of scenario {sc.name} ({', '.join(sc.topology.nodes)})")


def mix(sc: Scenario, impls: list[Implementation], assignment: dict[str, str]) -> Implementation:
    """A mixed-language topology run on purpose: each node of the scenario
    from the implementation named for it (`--mix a=go --mix b=rust ...`)."""
    if sc.topology is None:
        raise InputError(f"--mix: scenario {sc.name} runs one node per implementation (no [topology])")
    by_name = {i.name: i for i in impls}
    for node in assignment:
        if node not in sc.topology.nodes:
            raise InputError(f"--mix: scenario {sc.name} has no node '{node}' (nodes: {', '.join(sc.topology.nodes)})")
    specs, parts = {}, []
    for node in sc.topology.nodes:
        if node not in assignment:
            raise InputError(f"--mix: no implementation given for node '{node}' of {sc.name}")
        owner = by_name.get(assignment[node])
        if owner is None:
            raise InputError(f"--mix: {sc.name} has no implementation '{assignment[node]}' "
                             f"(known: {', '.join(sorted(by_name))})")
        ns = owner.node(node)
        specs[node] = NodeSpec(ns.name, ns.command, ns.env, ns.container_command, owner)
        if owner not in parts:
            parts.append(owner)
    name = "mix-" + "-".join(f"{n}.{assignment[n]}" for n in sorted(sc.topology.nodes))
    first = parts[0]
    return Implementation(
        scenario=sc.name, name=name, language="mixed",
        framework=" + ".join(f"{n}: {specs[n].owner.language} ({specs[n].owner.framework})" for n in sc.topology.nodes),
        description=f"mixed topology: {', '.join(f'{n} from {assignment[n]}' for n in sc.topology.nodes)}",
        dir=first.dir, build=None, artifacts=[], requires=[], exclude=[], run=first.run, run_env={},
        client=None, tuning={f"{n} ({assignment[n]})": "; ".join(f"{k}: {v}" for k, v in specs[n].owner.tuning.items())
                             for n in sc.topology.nodes},
        manifest_path=first.manifest_path, node_specs=specs, parts=parts)


def discover(root: Path) -> Catalog:
    """Find every scenario and implementation under a project root.

    Raises ManifestError on the first malformed manifest (file and field named).
    """
    root = Path(root).resolve()
    cat = Catalog(root)
    sdir = root / "scenarios"
    if not sdir.is_dir():
        raise InputError(f"{root}: no scenarios/ folder (is this a langbench project root?)")
    for manifest in sorted(sdir.glob(f"*/{SCENARIO_FILE}")):
        sc = load_scenario(manifest)
        cat.scenarios[sc.name] = sc
    idir = root / "implementations"
    for manifest in sorted(idir.glob(f"*/*/{IMPL_FILE}")):
        scenario = manifest.parent.parent.name
        if scenario not in cat.scenarios:
            raise ManifestError(manifest, "(folder)", f"no scenario named '{scenario}' in scenarios/")
        impl = load_implementation(manifest, scenario)
        _check_nodes(impl, cat.scenarios[scenario])
        cat.implementations.setdefault(scenario, []).append(impl)
    return cat


def expand(arg: str, values: dict[str, str]) -> str:
    """Fill {placeholders} in a command argument; unknown ones stay as they are."""
    out = arg
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out
