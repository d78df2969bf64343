"""Hydra plugin: every sam_plugins variant selectable by name in ``fairseq-hydra-train``.

fairseq's ``register_optimizer`` stores each optimizer's dataclass in Hydra's ConfigStore (group
``optimizer``), but ``common.user_dir`` is imported only after Hydra has composed the config, too late
for ``optimizer: xsam`` in a defaults list or ``optimizer=xsam`` on the command line. Hydra imports
every module under ``hydra_plugins`` while it discovers its plugins, before it composes, so this
module registers the variants then: inside fairseq's Hydra entry points only. Other Hydra
applications, and fairseq's argparse tools (which compose with Hydra internally), are left untouched.
"""

from __future__ import annotations

import sys

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

FAIRSEQ_HYDRA_ENTRIES = ("fairseq_cli.hydra_train", "fairseq_cli.hydra_validate")


def in_fairseq_hydra_entry() -> bool:
    """Whether this process runs one of fairseq's Hydra entry points (imported, or run with ``python -m``)."""
    if "fairseq" not in sys.modules:
        return False
    main = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None)
    return main in FAIRSEQ_HYDRA_ENTRIES or any(name in sys.modules for name in FAIRSEQ_HYDRA_ENTRIES)


if in_fairseq_hydra_entry():
    import fairseq_ext  # noqa: F401  (registers the optimizers, and so their ConfigStore nodes)


class SamPluginsSearchPath(SearchPathPlugin):
    """A plugin Hydra finds, so it imports this module; the search path itself needs nothing."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Leave the search path as it is: the optimizers' nodes live in the ConfigStore."""
