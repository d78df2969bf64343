"""fairseq plugin: ``fairseq-train --user-dir $(python -m fairseq_ext) --optimizer xsam ...``.

Importing it registers every sam_plugins variant as a fairseq optimizer, installs the trainer hooks
that run the update in ``task.optimizer_step``, lets fairseq read its checkpoints on torch ≥ 2.6, and
makes ``--help`` list the chosen optimizer's flags.
"""

from .checkpoints import allow_fairseq_checkpoints
from .cli_help import show_full_help
from .hooks import install
from .optimizer import register_all

register_all()
install()
allow_fairseq_checkpoints()
show_full_help()
