"""Packages the example project as an egg for Scrapyd (``scrapyd-deploy``, or
``python setup.py bdist_egg``): the project's code, and its policy files at the
egg's top level, where they sit in the project folder, so that the relative
``GDPR_POLICY`` of settings.py finds them when Scrapyd runs the egg."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent

# every file under policies/ (the policy, its terms snapshots, its objection list as
# deployed), grouped by folder as data_files wants them
policy_files: dict[str, list[str]] = {}
for path in sorted((HERE / "policies").rglob("*")):
    if path.is_file():
        policy_files.setdefault(path.parent.relative_to(HERE).as_posix(), []).append(path.relative_to(HERE).as_posix())

setup(
    name="example",
    version="1.0",
    packages=find_packages(include=["example", "example.*"]),
    data_files=sorted(policy_files.items()),
    entry_points={"scrapy": ["settings = example.settings"]},
)
