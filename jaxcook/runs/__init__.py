"""The local run registry: runs, checkpoints (with sha256) and lineage in one SQLite file.

Every `jaxcook.run` / `scripts/train.py` run is recorded (`jaxcook.runs.hook`); browse them with
`python -m jaxcook.runs list|show|lineage`. The file is `$JAXCOOK_REGISTRY` (`off` = none), else
`runs.sqlite` in jaxcook's cache folder (`$JAXCOOK_CACHE`, default `~/.cache/jaxcook`).
"""

from jaxcook.runs.registry import RegistryError, RunRegistry, registry_path

__all__ = ["RegistryError", "RunRegistry", "registry_path"]
