"""Local base images for the docker runtime, built from Debian's packages.

No container registry is needed: a minimal Debian root is made with
debootstrap (from Debian's own mirror) and imported as
`langbench/debian:bookworm`; the three bases the implementations' Dockerfiles
name by default are built on top of it:

    langbench/base-cc:bookworm       glibc, libgcc and CA certificates only,
                                     on an empty root (like distroless/cc)
    langbench/base-python:bookworm   Debian's CPython 3.11 with venv/pip
    langbench/base-java:bookworm     Debian's OpenJDK 17 JRE (headless)

(The Go image needs no base: it is FROM scratch.) Documentation, man pages,
translations and apt's lists are stripped, and dpkg is told not to install
them again, as Debian's "slim" images do. Certificates of local authorities
that this machine trusts (/usr/local/share/ca-certificates/*.crt, a company
or egress proxy CA for example) are added to the bases' trust stores, so that
image builds can fetch packages through such a proxy; the image labels say
which were added.

Where a registry is reachable the official images can be used instead:
either as the Debian root (`langbench images --root-image debian:bookworm-slim`)
or per implementation at build time (LANGBENCH_BASE_IMAGE_<NAME>, see
runtimes/docker.py).

Everything goes through the Docker SDK for Python; nothing parses docker CLI
output.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ToolError

SUITE = "bookworm"
MIRROR = os.environ.get("LANGBENCH_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("LANGBENCH_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
ROOT_TAG = f"langbench/debian:{SUITE}"
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
LABEL = "langbench.base"           # on every base image: its short name
ORIGIN_LABEL = "langbench.base.origin"

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ docker client

def client(timeout: int = 600):
    """A Docker SDK client for the local daemon, or a ToolError saying why not."""
    try:
        import docker  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - the package is a dependency
        raise ToolError(f"the Docker SDK for Python is not installed ({exc})") from None
    try:
        c = docker.from_env(timeout=timeout)
        c.ping()
        return c
    except Exception as exc:  # noqa: BLE001 - any failure means "no daemon here"
        raise ToolError(f"no Docker daemon answers ({type(exc).__name__}: {str(exc)[:160]}); "
                        "on Debian as root, ./setup.sh installs docker.io and starts dockerd") from None


def image_or_none(c, ref: str):
    import docker.errors  # noqa: PLC0415
    try:
        return c.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


# ------------------------------------------------------------------ the bases

@dataclass(frozen=True)
class Base:
    name: str
    tag: str
    description: str
    dockerfile: str            # built FROM ${ROOT} (the Debian root image)


_SLIM_DPKG = """\
# like Debian's slim images: no documentation, manuals or translations
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""

_APT_CONF = """\
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
"""

# Shell fragment: delete what the slim dpkg config keeps out, and apt's caches.
_TRIM = ("rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/log/apt/* "
         "/var/log/dpkg.log /var/log/alternatives.log /usr/share/man/* /usr/share/info/* "
         "/usr/share/lintian /usr/share/linda /tmp/* "
         "&& find /usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete "
         "&& find /usr/share/doc -mindepth 1 -type d -empty -delete "
         "&& find /usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +")

_ADD_CAS = ("if ls /tmp/local-ca/*.crt >/dev/null 2>&1; then cp /tmp/local-ca/*.crt /usr/local/share/ca-certificates/; fi "
            "&& rm -rf /tmp/local-ca")

BASES: dict[str, Base] = {
    "cc": Base("cc", f"langbench/base-cc:{SUITE}",
               "glibc, libgcc and CA certificates on an empty root (like distroless/cc)",
               f"""\
ARG ROOT
FROM ${{ROOT}} AS pkgs
COPY local-ca/ /tmp/local-ca/
RUN set -eux; {_ADD_CAS}; \\
    apt-get update; apt-get install -y ca-certificates; update-ca-certificates; \\
    mkdir -p /rootfs /debs; cd /debs; \\
    apt-get download libc6 libgcc-s1 ca-certificates netbase tzdata; \\
    for d in *.deb; do dpkg-deb -x "$d" /rootfs; done; \\
    cd /rootfs; \\
    mkdir -p etc/ssl/certs tmp home/nonroot root; chmod 1777 tmp; chmod 700 root; \\
    chown 65532:65532 home/nonroot; \\
    cp /etc/ssl/certs/ca-certificates.crt etc/ssl/certs/ca-certificates.crt; \\
    cp /etc/os-release etc/os-release; \\
    rm -rf usr/share/doc usr/share/man usr/share/info usr/share/lintian usr/share/locale \\
           usr/share/ca-certificates usr/sbin usr/bin etc/ca-certificates* etc/init.d; \\
    printf 'root:x:0:0:root:/root:/sbin/nologin\\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\\n' > etc/passwd; \\
    printf 'root:x:0:\\nnobody:x:65534:\\nnonroot:x:65532:\\n' > etc/group; \\
    printf 'hosts: files dns\\n' > etc/nsswitch.conf

FROM scratch
COPY --from=pkgs /rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
"""),
    "python": Base("python", f"langbench/base-python:{SUITE}",
                   "Debian's CPython 3.11 with venv (pip in venvs) on a slim Debian root",
                   f"""\
ARG ROOT
FROM ${{ROOT}}
COPY local-ca/ /tmp/local-ca/
RUN set -eux; {_ADD_CAS}; \\
    apt-get update; apt-get install -y ca-certificates python3 python3-venv; \\
    update-ca-certificates; apt-get clean; \\
    {_TRIM}
ENV LANG=C.UTF-8
CMD ["python3"]
"""),
    "java": Base("java", f"langbench/base-java:{SUITE}",
                 "Debian's OpenJDK 17 JRE (headless) on a slim Debian root",
                 f"""\
ARG ROOT
FROM ${{ROOT}}
COPY local-ca/ /tmp/local-ca/
RUN set -eux; {_ADD_CAS}; \\
    mkdir -p /usr/share/man/man1; \\
    apt-get update; apt-get install -y ca-certificates openjdk-17-jre-headless; \\
    update-ca-certificates; apt-get clean; \\
    {_TRIM}
ENV LANG=C.UTF-8 \\
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
CMD ["java", "-version"]
"""),
}

LOCAL_TAGS = {b.tag: b for b in BASES.values()} | {ROOT_TAG: None}


def local_cas() -> list[Path]:
    return sorted(LOCAL_CA_DIR.glob("*.crt")) if LOCAL_CA_DIR.is_dir() else []


# ------------------------------------------------------------------ the Debian root

def _run(argv: list[str], log_file, timeout: float = 1800) -> None:
    log_file.write(f"$ {' '.join(argv)}\n".encode())
    log_file.flush()
    proc = subprocess.run(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          timeout=timeout)
    if proc.returncode != 0:
        raise ToolError(f"{argv[0]} failed with exit code {proc.returncode} (log: {log_file.name})")


def build_root(c, log_dir: Path, log: Log = _stderr) -> dict:
    """debootstrap a minimal Debian root, slim it down and import it as ROOT_TAG."""
    if os.geteuid() != 0:
        raise ToolError("making the local Debian root needs root (debootstrap); where a registry is "
                        "reachable, use `langbench images --root-image debian:bookworm-slim` instead")
    if shutil.which("debootstrap") is None:
        raise ToolError("debootstrap is not installed (apt-get install debootstrap; ./setup.sh does it)")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "debootstrap.log"
    work = Path(tempfile.mkdtemp(prefix="langbench-root-", dir="/var/tmp"))
    rootfs = work / "rootfs"
    t0 = time.monotonic()
    try:
        with log_path.open("wb") as lf:
            log(f"debootstrap --variant=minbase {SUITE} from {MIRROR} (log: {log_path})")
            _run(["debootstrap", "--variant=minbase", "--include=ca-certificates", SUITE, str(rootfs), MIRROR], lf)
            (rootfs / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
            (rootfs / "etc/dpkg/dpkg.cfg.d/langbench-slim").write_text(_SLIM_DPKG)
            (rootfs / "etc/apt/apt.conf.d/90langbench").write_text(_APT_CONF)
            (rootfs / "etc/apt/sources.list").write_text(
                f"deb {MIRROR} {SUITE} main\n"
                f"deb {MIRROR} {SUITE}-updates main\n"
                f"deb {SECURITY_MIRROR} {SUITE}-security main\n")
            (rootfs / "etc/hostname").write_text("langbench\n")
            _run(["chroot", str(rootfs), "sh", "-c", _TRIM], lf)
            tar_path = work / "rootfs.tar"
            _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tar_path), "."], lf)
            log(f"importing {ROOT_TAG} ({tar_path.stat().st_size / 1e6:.0f} MB root)")
            origin = f"debootstrap --variant=minbase {SUITE} {MIRROR}"
            changes = ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                       "ENV LANG=C.UTF-8", 'CMD ["bash"]',
                       f"LABEL {LABEL}=debian",
                       f"LABEL {ORIGIN_LABEL}={json.dumps(origin)}",
                       f"LABEL langbench.created={time.strftime('%Y-%m-%dT%H:%M:%S')}"]
            c.api.import_image_from_file(str(tar_path), repository=ROOT_TAG.split(":")[0],
                                         tag=ROOT_TAG.split(":")[1], changes=changes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    img = c.images.get(ROOT_TAG)
    return {"tag": ROOT_TAG, "id": img.id, "size_mb": img.attrs["Size"] / 1e6,
            "seconds": time.monotonic() - t0, "origin": "debootstrap"}


# ------------------------------------------------------------------ building from a Dockerfile

def build_context(dockerfile: str, extra: dict[str, bytes] | None = None) -> io.BytesIO:
    """A tar build context holding the Dockerfile, local CA certificates and extra files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        add("Dockerfile", dockerfile.encode())
        d = tarfile.TarInfo("local-ca")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
        for ca in local_cas():
            add(f"local-ca/{ca.name}", ca.read_bytes())
        for name, data in (extra or {}).items():
            add(name, data)
    buf.seek(0)
    return buf


def run_build(c, log_path: Path, tag: str, labels: dict[str, str], buildargs: dict[str, str] | None = None,
              path: str | None = None, fileobj=None, nocache: bool = False,
              pull: bool = False, timeout_s: float = 1800, dockerfile: str | None = None) -> tuple[str, bool]:
    """One `docker build` through the SDK, its output streamed to log_path.

    Returns (image id, whether every step came from the build cache)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    image_id = None
    all_cached, steps = True, 0
    error = None
    kwargs = dict(tag=tag, labels=labels, buildargs=buildargs or {}, rm=True, forcerm=True,
                  nocache=nocache, pull=pull, decode=True, timeout=timeout_s)
    if path is not None:
        kwargs["path"] = path
        if dockerfile is not None:
            kwargs["dockerfile"] = dockerfile
    else:
        kwargs.update(fileobj=fileobj, custom_context=True)
    with log_path.open("a", encoding="utf-8", errors="replace") as lf:
        lf.write(f"--- docker build -t {tag} ({time.strftime('%Y-%m-%d %H:%M:%S')})"
                 f" buildargs={buildargs or {}}\n")
        try:
            for chunk in c.api.build(**kwargs):
                if "stream" in chunk:
                    text = chunk["stream"]
                    lf.write(text)
                    if text.startswith("Step "):
                        steps += 1
                    elif "Running in " in text:
                        all_cached = False
                elif "error" in chunk:
                    error = chunk.get("error", "").strip()
                    lf.write(f"ERROR: {error}\n")
                elif "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                elif "status" in chunk:
                    lf.write(f"{chunk['status']} {chunk.get('progress', '')}\n")
        except Exception as exc:  # noqa: BLE001 - connection or API errors
            error = f"{type(exc).__name__}: {exc}"
            lf.write(f"ERROR: {error}\n")
    if error:
        raise ToolError(f"docker build of {tag} failed: {error[:300]} (log: {log_path})")
    if image_id is None:
        img = image_or_none(c, tag)
        if img is None:
            raise ToolError(f"docker build of {tag} produced no image (log: {log_path})")
        image_id = img.id
    return image_id, all_cached and steps > 0


def build_base(c, base: Base, root_ref: str, log_dir: Path, log: Log = _stderr) -> dict:
    cas = [p.name for p in local_cas()]
    log(f"building {base.tag}: {base.description}"
        + (f" (adding local CA certificates: {', '.join(cas)})" if cas else ""))
    root = c.images.get(root_ref)
    origin = (root.labels or {}).get(ORIGIN_LABEL) or f"image {root_ref}"
    labels = {LABEL: base.name, ORIGIN_LABEL: f"Debian {SUITE} packages on {root_ref} ({origin})",
              "langbench.base.description": base.description,
              "langbench.base.local_ca": ",".join(cas),
              "langbench.created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    t0 = time.monotonic()
    image_id, _ = run_build(c, log_dir / f"base-{base.name}.log", base.tag, labels, {"ROOT": root_ref},
                            fileobj=build_context(base.dockerfile), nocache=True)
    img = c.images.get(image_id)
    return {"tag": base.tag, "id": img.id, "size_mb": img.attrs["Size"] / 1e6,
            "seconds": time.monotonic() - t0, "origin": labels[ORIGIN_LABEL]}


def build_all(names: list[str] | None = None, force: bool = False, root_image: str | None = None,
              log_dir: Path | None = None, log: Log = _stderr) -> list[dict]:
    """Build the local bases that are missing (all of them with force); idempotent.

    root_image: build the bases on this image (e.g. debian:bookworm-slim from a
    registry) instead of the local debootstrap root."""
    c = client(timeout=1800)
    log_dir = log_dir or Path(tempfile.gettempdir()) / "langbench-images"
    names = names or list(BASES)
    unknown = [n for n in names if n not in BASES]
    if unknown:
        raise ToolError(f"unknown base image(s) {', '.join(unknown)} (known: {', '.join(BASES)})")
    out = []
    todo = [BASES[n] for n in names if force or image_or_none(c, BASES[n].tag) is None]
    for n in names:
        if BASES[n] not in todo:
            img = c.images.get(BASES[n].tag)
            out.append({"tag": BASES[n].tag, "id": img.id, "size_mb": img.attrs["Size"] / 1e6,
                        "skipped": True, "origin": (img.labels or {}).get(ORIGIN_LABEL)})
    if not todo:
        return out
    root_ref = root_image or ROOT_TAG
    if root_image is None:
        if force or image_or_none(c, ROOT_TAG) is None:
            out.insert(0, build_root(c, log_dir, log))
        else:
            log(f"{ROOT_TAG} exists (use --force to rebuild it)")
    elif image_or_none(c, root_image) is None:
        log(f"pulling {root_image}")
        try:
            c.images.pull(root_image)
        except Exception as exc:  # noqa: BLE001
            raise ToolError(f"could not pull {root_image}: {str(exc)[:200]}") from None
    for base in todo:
        out.append(build_base(c, base, root_ref, log_dir, log))
    _prune_dangling(c)
    return out


def ensure(tag: str, log_dir: Path, log: Log = _stderr) -> bool:
    """Build a missing local base (and the Debian root it needs). False when
    `tag` is not one of ours."""
    base = next((b for b in BASES.values() if b.tag == tag), None)
    if base is None:
        return False
    build_all([base.name], log_dir=log_dir, log=log)
    return True


def _prune_dangling(c) -> None:
    try:
        c.images.prune(filters={"dangling": True, "label": LABEL})
    except Exception:  # noqa: BLE001 - housekeeping only
        pass


def describe(c) -> list[dict]:
    out = []
    for tag in [ROOT_TAG] + [b.tag for b in BASES.values()]:
        img = image_or_none(c, tag)
        out.append({"tag": tag, "present": img is not None,
                    "id": img.id if img else None,
                    "size_mb": round(img.attrs["Size"] / 1e6, 1) if img else None,
                    "origin": (img.labels or {}).get(ORIGIN_LABEL) if img else None})
    return out
