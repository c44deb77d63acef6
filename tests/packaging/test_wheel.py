"""The wheel built from pyproject.toml is the whole product: installed into a fresh venv, it imports
every package of the source tree and carries the browser files.

The wheel is built from a copy of the tree (so no build/ or egg-info lands in the work tree) with pip as
configured on the machine, and installed with ``--no-deps --no-index``; the runtime dependencies come
from the test's own environment through a ``.pth`` line (a path in a ``.pth`` file is put on
``sys.path`` but its own ``.pth`` files are not run, so the editable install of the work tree stays out).
The check runs with ``-I`` from an empty directory, so nothing but the installed wheel can answer
``import hub``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP = ("hub", "storage")


def _source_packages() -> list[str]:
    """Every package under hub/ and storage/, as dotted names."""
    names = []
    for top in TOP:
        for init in sorted((ROOT / top).rglob("__init__.py")):
            names.append(".".join(init.parent.relative_to(ROOT).parts))
    return names


def test_every_source_directory_is_a_package() -> None:
    """``packages.find`` only finds directories with an ``__init__.py``: a directory of modules
    without one would silently be left out of the wheel."""
    missing = []
    for top in TOP:
        for d in [ROOT / top, *(p for p in (ROOT / top).rglob("*") if p.is_dir())]:
            if "__pycache__" in d.parts or d.name == "static":
                continue
            if any(d.glob("*.py")) and not (d / "__init__.py").exists():
                missing.append(str(d.relative_to(ROOT)))
    assert not missing, f"directories with modules but no __init__.py: {missing}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for top in TOP:
        shutil.copytree(ROOT / top, src / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        check=True,
        timeout=300,
    )
    (whl,) = dist.glob("resumable_hub-*.whl")
    return whl


def test_wheel_holds_every_package_and_the_static_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in _source_packages():
        assert f"{pkg.replace('.', '/')}/__init__.py" in names, pkg
    for d in ("hub/static", "hub/demo/static"):
        static = sorted(p.name for p in (ROOT / d).iterdir() if p.is_file())
        assert static, f"{d} is empty"
        for name in static:
            assert f"{d}/{name}" in names, name


def test_wheel_installs_in_a_fresh_venv_and_imports_everything(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # the runtime dependencies (aiohttp, msgspec, ...) from this environment, after the wheel's own
    (Path(purelib) / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    packages = _source_packages()
    script = f"""
import importlib, importlib.resources, json, sys
mods = {{}}
for name in {packages!r}:
    mods[name] = importlib.import_module(name).__file__
import hub.__main__
files = importlib.resources.files("hub")
static = sorted(p.name for d in ("static", "demo/static") for p in files.joinpath(d).iterdir())
print(json.dumps({{"mods": mods, "static": static, "prefix": sys.prefix}}))
"""
    run = tmp_path / "empty"
    run.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run(
        [str(py), "-I", "-c", script],
        check=True,
        capture_output=True,
        text=True,
        cwd=run,
        env=env,
        timeout=120,
    )
    got = json.loads(out.stdout)
    assert sorted(got["mods"]) == sorted(packages)
    for name, file in got["mods"].items():
        assert file.startswith(purelib), f"{name} imported from {file}, not from the installed wheel"
    assert {"resumable.js", "chat.js", "react.js", "index.html", "demo.js"} <= set(got["static"])
    # the console script is installed and runs
    cli = subprocess.run(
        [str(venv / "bin" / "resumable-hub")], capture_output=True, text=True, cwd=run, env=env, timeout=120
    )
    assert cli.returncode == 2 and "serve" in cli.stdout, cli.stdout + cli.stderr
