"""Ships the top-level configs/ inside the wheel as vae_lab/configs/, so installed commands compose from any
directory (vae_lab/configs.py finds them). Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:  # an editable install reads the checkout's configs/ directly
            shutil.copytree(Path(__file__).parent / "configs", Path(self.build_lib) / "vae_lab" / "configs",
                            dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithConfigs})
