"""The layout's contract: one import package, and a domain library that knows nothing of Prefect.

The domain is every module of `pg_cutover` outside `pg_cutover.flows`, `pg_cutover.tasks` (the
repository's flows/ and tasks/) and `pg_cutover.launcher`. It may import neither Prefect nor
those three: the flows and tasks wrap the domain, never the other way round, and the launcher (the
command line, the temporary server) is what runs before and around Prefect.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from pg_cutover.launcher.embedded import REPO_ROOT

PACKAGE = REPO_ROOT / "pg_cutover"
OUTSIDE_THE_DOMAIN = ("pg_cutover.flows", "pg_cutover.tasks", "pg_cutover.launcher")
FORBIDDEN = ("prefect",) + OUTSIDE_THE_DOMAIN


def _domain_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if not name.startswith(OUTSIDE_THE_DOMAIN):
            modules[name] = path
    return modules


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """Every module an import statement names, at any depth (TYPE_CHECKING and function bodies too)."""
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _offends(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_the_domain_imports_neither_prefect_nor_the_flows_tasks_or_launcher():
    modules = _domain_modules()
    assert {"pg_cutover.pg.db", "pg_cutover.checks.parity", "pg_cutover.runbook.manifest",
            "pg_cutover.rollback.restore", "pg_cutover.migrations.alembic_driver"} <= set(modules)
    offenders = [f"{path.relative_to(REPO_ROOT)}:{line} imports {name}"
                 for module, path in modules.items() for line, name in _imports(path, module) if _offends(name)]
    assert offenders == []
    # The rule sees what it must: a launcher module is outside the domain because it does import Prefect.
    cli = PACKAGE / "launcher" / "cli.py"
    assert any(_offends(name) for _, name in _imports(cli, "pg_cutover.launcher.cli"))


def test_importing_the_whole_domain_loads_no_prefect():
    """What the statements say, checked at run time: no module pulls Prefect in by another route."""
    names = sorted(_domain_modules())
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect' or m.startswith("
            f"{OUTSIDE_THE_DOMAIN!r})))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_wheel_installs_one_package_and_no_generic_top_level_names(tmp_path):
    """flows/ and tasks/ install as pg_cutover.flows and pg_cutover.tasks: `import flows` finds nothing."""
    source = tmp_path / "source"  # a copy: the build writes build/ and egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "pg_cutover", "flows", "tasks"):
        copy = shutil.copytree if (REPO_ROOT / name).is_dir() else shutil.copy
        copy(REPO_ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                                  if (REPO_ROOT / name).is_dir() else {}))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((tmp_path / "dist").glob("pg_cutover-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "site")
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"pg_cutover"}
    assert {"pg_cutover/flows/cutover.py", "pg_cutover/tasks/backup.py", "pg_cutover/migrations/alembic_driver.py",
            "pg_cutover/launcher/cli.py"} <= set(names)
    # From the unpacked wheel, outside the repository: the package resolves there, the generic names nowhere.
    code = ("import importlib.util as u\n"
            "print(u.find_spec('pg_cutover.flows.cutover').origin)\n"
            "print(u.find_spec('flows'), u.find_spec('tasks'))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    origin, generic = proc.stdout.splitlines()
    assert origin == str(tmp_path / "site" / "pg_cutover" / "flows" / "cutover.py")
    assert generic == "None None"
