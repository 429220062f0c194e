"""tools/structure.py finds import cycles (lazy imports included, TYPE_CHECKING ones not) and oversized code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "structure.py"
spec = importlib.util.spec_from_file_location("structure_tool", TOOL)
structure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(structure)


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_a_clean_package_exits_0(tmp_path, capsys) -> None:
    package = write_package(tmp_path, {"a.py": "from pkg import b\n", "b.py": "import os\n"})
    assert structure.main(["--package", str(package)]) == 0
    assert "import cycles: 0" in capsys.readouterr().out


def test_a_lazy_import_cycle_counts_and_a_type_checking_one_does_not(tmp_path, capsys) -> None:
    package = write_package(
        tmp_path,
        {
            "a.py": "from pkg.sub.b import f\n",
            "sub/__init__.py": "",
            "sub/b.py": "def f():\n    from .. import a\n",
            "c.py": "from typing import TYPE_CHECKING\nfrom pkg import d\nif TYPE_CHECKING:\n    from pkg import a\n",
            "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n",
        },
    )
    assert structure.main(["--package", str(package)]) == 1
    out = capsys.readouterr().out
    assert "import cycles: 1" in out and "pkg.a -> pkg.sub.b -> pkg.a" in out


def test_oversized_modules_classes_and_functions(tmp_path, capsys) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(61))
    package = write_package(
        tmp_path, {"long.py": f"class C:\n    def m(self):\n{body.replace('    ', '        ')}\n" + "\n" * 400}
    )
    assert structure.main(["--package", str(package)]) == 1
    out = capsys.readouterr().out
    assert "modules over 400 lines: 1" in out and "pkg/long.py" in out
    assert "functions over 60 lines: 1" in out and "pkg/long.py:2 C.m" in out
    assert "classes over 200 lines: 0" in out
