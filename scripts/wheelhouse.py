"""The wheels an offline GPU server lacks, downloaded here into ``wheelhouse/``.

README, "GPU check and offline GPU servers":

    python3 scripts/wheelhouse.py download [--python-version 3.12] [--target scripts/offline_target.txt]
    python3 scripts/wheelhouse.py verify   [--python-version 3.12]      # offline, into fresh virtual environments
    python3 scripts/wheelhouse.py install SITE                           # on the server (scripts/gpu_check.sh)

``download`` resolves scrapbench's dependencies (pyproject.toml) with pip, in a fresh virtual environment of the
server's Python version where the server's preinstalled distributions (``--target``: one ``name==version`` a
line, as ``python3 -m pip list --format=freeze`` prints them there) stand as empty placeholders: pip then picks
only what the server lacks, at versions that agree with what it has (the placeholders are pinned: nothing of the
server's is upgraded). Those wheels go to ``wheelhouse/``; ``wheelhouse/build/`` holds what building scrapbench
from the working tree needs (setuptools, wheel). ``wheelhouse/MANIFEST.json`` lists every file with its size; the
total must stay within ``--limit-mib`` (what travels with the working tree).

``verify`` repeats, with ``--no-index`` (nothing from the network), what the server does: every wheel resolves
and installs against the placeholders, ``pip check`` passes, and scrapbench builds from the working tree with
the build wheels alone. The placeholders have no code (torch and its CUDA libraries are several GB), so nothing
is imported: that part is the GPU check itself.

``install SITE`` (what ``scripts/gpu_check.sh`` runs on the server, and ``verify`` here): every wheel into the
folder SITE with ``--no-deps`` (the server's own packages stay as they are), scrapbench built from the working
tree beside them, then a check that every requirement of what SITE holds is met by SITE or by the server.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELHOUSE = REPO / "wheelhouse"
TARGET = REPO / "scripts" / "offline_target.txt"
LIMIT_MIB = 64.0
# ultralytics asks for opencv-python; servers and containers usually carry the headless build, which installs
# the same `cv2` module. A requirement of the first is met by the second (and its wheel, ~60 MiB, stays home).
PROVIDED_BY = {"opencv-python": ("opencv-python-headless", "opencv-contrib-python",
                                 "opencv-contrib-python-headless")}
# To stay within the allowance, measured: polars 1.34 and later ship their engine as polars-runtime-32 (51 MiB);
# 1.33 is one 38 MiB wheel (ultralytics needs polars >= 0.20: its trainer reads results.csv with it).
SIZE_CONSTRAINTS = ("polars<1.34",)
# Required by a dependency's metadata but never imported on scrapbench's paths; left home (a placeholder stands
# for it when resolving), with why. anomalib 2.7 lists imagecodecs (26 MiB) and imports it nowhere; tifffile
# uses it only to decode compressed TIFF files (LZW, JPEG, ...), which scrapbench then reports as unreadable.
LEFT_OUT = {"imagecodecs": "listed by anomalib, imported by neither it nor scrapbench; tifffile's compressed TIFFs"}


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def read_target(path: Path) -> dict[str, str]:
    """The server's preinstalled distributions: canonical name → version (``name==version`` lines, # comments)."""
    found: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise SystemExit(f"{path}:{number}: expected name==version, got {line!r}")
        found[_canonical(name.strip())] = version.strip()
    return found


def requirements() -> tuple[list[str], list[str]]:
    """scrapbench's runtime dependencies and its build requirements, from pyproject.toml."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(project["project"]["dependencies"]), list(project["build-system"]["requires"])


def find_python(version: str) -> str:
    """An interpreter of ``version`` (3.12): python3.12 on PATH, else pyenv's."""
    for candidate in (shutil.which(f"python{version}"),
                      *sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"), reverse=True)):
        if candidate and subprocess.run([str(candidate), "-c", "import sys, venv, ensurepip"],
                                        capture_output=True).returncode == 0:
            return str(candidate)
    raise SystemExit(f"no Python {version} here (python{version} on PATH or in ~/.pyenv/versions): the wheels must "
                     f"be resolved for the server's Python version")


def placeholder_venv(python: str, where: Path, target: dict[str, str]) -> Path:
    """A fresh virtual environment in which every distribution of ``target`` is installed as an empty
    placeholder (metadata only: pip sees it installed), and so are those that ``target``'s provide
    (``PROVIDED_BY``) and those left out (``LEFT_OUT``); returns its python."""
    subprocess.run([python, "-m", "venv", str(where)], check=True)
    venv_python = where / "bin" / "python"
    site = Path(subprocess.run([str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    provided = {name: target[alias] for name, aliases in PROVIDED_BY.items() for alias in aliases if alias in target}
    for name, version in {**target, **provided, **{name: "0" for name in LEFT_OUT}}.items():
        if name in ("pip",):
            continue  # the virtual environment's own
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("scrapbench-wheelhouse-placeholder\n")
        (info / "RECORD").write_text("")
    return venv_python


def _pip(venv_python: Path | str, *args: str, isolated: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """pip of ``venv_python``; ``isolated``: without this machine's pip settings (configuration files, PIP_*
    variables: extra indexes, find-links, constraints), as on the server."""
    env = {key: value for key, value in os.environ.items() if not (isolated and key.startswith("PIP_"))}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", **({"PIP_CONFIG_FILE": os.devnull} if isolated else {}))
    return subprocess.run([str(venv_python), "-m", "pip", *args], env=env, text=True, **kwargs)


def install_site(site: Path, python: Path | str = sys.executable, isolated: bool = False,
                 wheelhouse: Path = WHEELHOUSE) -> list[str]:
    """What ``scripts/gpu_check.sh`` does on the server: every wheel of the wheelhouse into ``site`` (``--no-deps``:
    the server's own packages stay as they are), then scrapbench built from the working tree with the build wheels
    alone; returns the requirements that are still not met."""
    manifest = json.loads((wheelhouse / "MANIFEST.json").read_text())
    wheels = [str(wheelhouse / w["file"]) for w in manifest["wheels"] if not w["file"].startswith("build/")]
    steps = [("the wheelhouse's wheels", ["--no-deps", *wheels]),
             ("scrapbench from the working tree", ["--find-links", str(wheelhouse / "build"), "--no-deps",
                                                   str(REPO)])]
    for what, args in steps:
        proc = _pip(python, "install", "--quiet", "--no-index", "--no-compile", "--target", str(site), *args,
                    isolated=isolated, capture_output=True)
        if proc.returncode != 0:
            raise SystemExit(f"installing {what} into {site} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return check_site(site, python)


def _pins(target: dict[str, str], work: Path) -> Path:
    pins = work / "pins.txt"
    pins.write_text("".join(f"{name}=={version}\n" for name, version in target.items() if name != "pip")
                    + "".join(f"{spec}\n" for spec in SIZE_CONSTRAINTS))
    return pins


def resolve(venv_python: Path, specs: list[str], pins: Path | None, work: Path, tag: str,
            ignore_installed: bool = False) -> list[dict]:
    """pip's choice of what to install for ``specs``, without installing: [{name, version, url, sha256}]. Wheels
    where there are any; a source archive only where a project publishes none (FrEIA, which anomalib needs)."""
    listed = work / f"{tag}.txt"
    listed.write_text("\n".join(specs) + "\n")
    report = work / f"{tag}-report.json"
    args = ["install", "--dry-run", "--quiet", "--prefer-binary", "--report", str(report), "-r", str(listed)]
    if pins is not None:
        args += ["-c", str(pins)]
    if ignore_installed:
        args.append("--ignore-installed")
    proc = _pip(venv_python, *args, capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"pip could not resolve {tag} against the server's packages:\n{proc.stderr[-4000:]}")
    chosen = []
    for item in json.loads(report.read_text())["install"]:
        info = item["download_info"]
        chosen.append({"name": _canonical(item["metadata"]["name"]), "version": item["metadata"]["version"],
                       "url": info["url"], "sha256": (info.get("archive_info") or {}).get("hashes", {}).get("sha256")})
    return chosen


def fetch(venv_python: Path, chosen: list[dict], folder: Path, root: Path) -> list[dict]:
    """Download exactly the chosen wheels (``pip download --no-deps``) into ``folder``, checked against pip's
    hashes, and build a wheel of each chosen source archive (pure Python only: a compiled one would be built for
    this machine); their paths relative to ``root``."""
    folder.mkdir(parents=True, exist_ok=True)
    wheels = [c for c in chosen if c["url"].endswith(".whl")]
    sources = [c for c in chosen if not c["url"].endswith(".whl")]
    files = []
    if wheels:
        proc = _pip(venv_python, "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(folder),
                    *[f"{c['name']}=={c['version']}" for c in wheels], capture_output=True)
        if proc.returncode != 0:
            raise SystemExit(f"pip download failed:\n{proc.stderr[-4000:]}")
    for c in wheels:
        path = folder / c["url"].rsplit("/", 1)[-1]
        if not path.is_file():
            raise SystemExit(f"pip download did not leave {path.name} in {folder}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if c["sha256"] and digest != c["sha256"]:
            raise SystemExit(f"{path.name}: sha256 {digest} differs from the index's {c['sha256']}")
        files.append({"file": str(path.relative_to(root)), "name": c["name"], "version": c["version"],
                      "bytes": path.stat().st_size, "sha256": digest, "built_from": None})
    for c in sources:
        before = set(folder.glob("*.whl"))
        proc = _pip(venv_python, "wheel", "--quiet", "--no-deps", "--no-binary", c["name"], "-w", str(folder),
                    f"{c['name']}=={c['version']}", capture_output=True)
        built = sorted(set(folder.glob("*.whl")) - before)
        if proc.returncode != 0 or len(built) != 1:
            raise SystemExit(f"building a wheel of {c['name']} {c['version']} failed:\n{proc.stderr[-4000:]}")
        if not built[0].name.endswith("-none-any.whl"):
            raise SystemExit(f"{c['name']} {c['version']} publishes no wheel and is not pure Python "
                             f"({built[0].name}): build it for the server's platform yourself")
        files.append({"file": str(built[0].relative_to(root)), "name": c["name"], "version": c["version"],
                      "bytes": built[0].stat().st_size, "sha256": hashlib.sha256(built[0].read_bytes()).hexdigest(),
                      "built_from": c["url"].rsplit("/", 1)[-1]})
    return files


def download(args: argparse.Namespace) -> None:
    target, wheelhouse = read_target(args.target), args.wheelhouse
    runtime, build = requirements()
    python = find_python(args.python_version)
    if wheelhouse.exists() and not (wheelhouse / "MANIFEST.json").is_file() and any(wheelhouse.iterdir()):
        raise SystemExit(f"{wheelhouse} holds files this script did not write (no MANIFEST.json); move them away")
    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as tmp:
        work = Path(tmp)
        venv_python = placeholder_venv(python, work / "venv", target)
        print(f"resolving scrapbench's {len(runtime)} dependencies for Python {args.python_version} against "
              f"{len(target)} preinstalled distributions ({args.target.name}) ...", flush=True)
        missing = resolve(venv_python, runtime, _pins(target, work), work, "runtime")
        missing = [c for c in missing if not any(alias in target for alias in PROVIDED_BY.get(c["name"], ()))]
        tools = resolve(venv_python, build, None, work, "build", ignore_installed=True)
        staging = wheelhouse.with_name(f".{wheelhouse.name}-staging")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            files = fetch(venv_python, missing, staging, staging)
            files += fetch(venv_python, tools, staging / "build", staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    total = sum(f["bytes"] for f in files)
    manifest = {"python_version": args.python_version, "target": args.target.name,
                "provided_by": {k: list(v) for k, v in PROVIDED_BY.items()}, "left_out": LEFT_OUT,
                "size_constraints": list(SIZE_CONSTRAINTS), "total_bytes": total,
                "limit_mib": args.limit_mib, "wheels": sorted(files, key=lambda f: -f["bytes"])}
    (staging / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if wheelhouse.exists():
        shutil.rmtree(wheelhouse)  # ours: it holds a MANIFEST.json (checked above)
    staging.rename(wheelhouse)
    for f in manifest["wheels"]:
        print(f"{f['bytes'] / 2**20:8.2f} MiB  {f['file']}")
    print(f"{total / 2**20:8.2f} MiB in {len(files)} wheels → {wheelhouse} (limit {args.limit_mib:g} MiB)")
    if total > args.limit_mib * 2**20:
        raise SystemExit(f"the wheelhouse is {total / 2**20:.1f} MiB, over the {args.limit_mib:g} MiB that travel "
                         f"with the working tree")


def verify(args: argparse.Namespace) -> None:
    """Offline: resolve, install and check the wheelhouse against the placeholders; build scrapbench."""
    target, wheelhouse = read_target(args.target), args.wheelhouse
    runtime, _ = requirements()
    manifest = json.loads((wheelhouse / "MANIFEST.json").read_text())
    python = find_python(args.python_version)
    offline = ["--no-index", "--find-links", str(wheelhouse)]
    with tempfile.TemporaryDirectory(prefix="wheelhouse-verify-") as tmp:
        work = Path(tmp)
        venv_python = placeholder_venv(python, work / "venv", target)
        listed = work / "runtime.txt"
        listed.write_text("\n".join(runtime) + "\n")
        pins = _pins(target, work)
        steps = [
            ("every dependency resolves and installs from the wheelhouse alone",
             ["install", "--quiet", *offline, "-r", str(listed), "-c", str(pins)]),
            ("pip check: every installed distribution's requirements are met", ["check"]),
        ]
        for what, pip_args in steps:
            proc = _pip(venv_python, *pip_args, isolated=True, capture_output=True)
            print(f"{'ok' if proc.returncode == 0 else 'FAILED'}: {what}", flush=True)
            if proc.returncode != 0:
                raise SystemExit((proc.stdout + proc.stderr)[-4000:])
        installed = _pip(venv_python, "list", "--format=freeze", isolated=True, capture_output=True,
                         check=True).stdout
        placeholders = {*target, *PROVIDED_BY, *LEFT_OUT}
        fresh = [line for line in installed.splitlines() if _canonical(line.split("==")[0]) not in placeholders]
        names = {w["name"] for w in manifest["wheels"] if not w["file"].startswith("build/")}
        extra = sorted(n for n in (_canonical(line.split("==")[0]) for line in fresh) if n not in names | {"pip"})
        if extra:
            raise SystemExit(f"installed but not in the manifest: {extra}")
        problems = install_site(work / "site", venv_python, isolated=True, wheelhouse=wheelhouse)
        print(f"{'ok' if not problems else 'FAILED'}: gpu_check.sh's install into a fresh site folder (every wheel "
              "with --no-deps, scrapbench built with wheelhouse/build alone); their requirements are met by it and "
              "the server's packages", flush=True)
        if problems:
            raise SystemExit("\n".join(problems))
    print(f"the wheelhouse ({len(manifest['wheels'])} wheels, {manifest['total_bytes'] / 2**20:.1f} MiB) installs "
          f"offline on Python {args.python_version} with {args.target.name}'s packages")


_CHECK = r"""
import importlib.metadata as md, json, sys
try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pip's own copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
site, provided, left_out = sys.argv[1], json.loads(sys.argv[2]), set(json.loads(sys.argv[3]))
everything = {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions()}
problems = []
for dist in md.distributions(path=[site]):
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in left_out:
            continue
        have = everything.get(name) or next((everything[a] for a in provided.get(name, []) if a in everything), None)
        if have is None:
            problems.append(f"{dist.metadata['Name']} needs {text}: not installed")
        elif req.specifier and not req.specifier.contains(have, prereleases=True):
            problems.append(f"{dist.metadata['Name']} needs {text}: {have} is installed")
print(json.dumps(problems))
"""


def check_site(site: Path, python: Path | str | None = None) -> list[str]:
    """Unmet requirements of the distributions in ``site`` (``site`` first on the path of ``python``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(":")}
    proc = subprocess.run([str(python or sys.executable), "-c", _CHECK, str(site),
                           json.dumps({k: list(v) for k, v in PROVIDED_BY.items()}), json.dumps(list(LEFT_OUT))],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return [f"the check itself failed: {proc.stderr.strip()[-2000:]}"]
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("download", "verify", "install"):
        command = sub.add_parser(name)
        command.add_argument("--wheelhouse", type=Path, default=WHEELHOUSE, help="the wheelhouse folder")
        if name == "install":
            command.add_argument("site", type=Path, help="the folder to install into (pip --target)")
            continue
        command.add_argument("--python-version", default="3.12", help="the server's Python (major.minor)")
        command.add_argument("--target", type=Path, default=TARGET, help="the server's `pip list --format=freeze`")
        command.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    args = parser.parse_args()
    if args.command == "download":
        download(args)
    elif args.command == "verify":
        verify(args)
    else:
        problems = install_site(args.site, wheelhouse=args.wheelhouse)
        for problem in problems:
            print(f"wheelhouse: {problem}", file=sys.stderr)
        sys.exit(4 if problems else 0)  # 4: installed, with requirements unmet (gpu_check.sh goes on)


if __name__ == "__main__":
    main()
