"""Packages for the wheel: every sub-package of edgekit/ is found (a new folder cannot be left out), and the two
top-level data folders ship inside it as edgekit.device_profiles and edgekit.converters.  All other metadata
lives in pyproject.toml."""
from setuptools import find_packages, setup

DATA = {"edgekit.device_profiles": "device_profiles", "edgekit.converters": "converters"}

setup(packages=find_packages(include=["edgekit", "edgekit.*"]) + list(DATA), package_dir=DATA)
