"""``python -m packager.cli``: the console script, for a venv whose bin/ is not on PATH."""

from packager.cli import run

run()
