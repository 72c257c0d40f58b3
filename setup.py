"""Build step only: project metadata lives in pyproject.toml.

`build_py` copies the repository's `schemas/`, `policies/` and `fixtures/` data into the wheel at
`bitnet/_resources/`, so an installed (non-editable) package finds them. The repository folders
stay the one source of truth (see bitnet/receipts/policy.py); the copy exists only in build output.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
RESOURCES = {"schemas": ("*.json",), "policies": ("*.yml",),
             # shared test data the pytest plugin hands to users (recipes, prompts, receipt corpora)
             "fixtures": ("*.yml", "*.md", "receipts/**/*.json", "receipts/**/*.yml")}


def copy_resources(src_root: Path, package_dir: Path) -> list[Path]:
    out = []
    for folder, patterns in RESOURCES.items():
        for pattern in patterns:
            for f in sorted((src_root / folder).glob(pattern)):
                dest = package_dir / "_resources" / folder / f.relative_to(src_root / folder)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest)
                out.append(dest)
    return out


class BuildPyWithResources(build_py):
    def run(self):
        super().run()
        if (HERE / "schemas").is_dir():  # absent when building from an sdist that lacks them
            copy_resources(HERE, Path(self.build_lib) / "bitnet")


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPyWithResources})
