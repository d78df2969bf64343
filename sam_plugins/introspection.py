"""What Python's tools show of a variant's constructor, generated from its ``Hyper`` declarations.

``inspect.signature`` lists every hyperparameter as a keyword with its default; the class docstring gets an
``Args:`` section (type, default, allowed range, per group or not, meaning), so ``help(sam_plugins.XSAM)``
and IDEs show what the README's tables show.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import SharpnessAware

# The constructor's own keywords, before and after the hyperparameters: (name, default, help).
LEADING = (
    ("params", inspect.Parameter.empty,
     "parameters, param groups (dicts with ``params``), or the model itself (which also sets ``model``)"),
    ("base", "sgd", "the base optimizer: a name in ``sam_plugins.BASES`` or an optimizer class / factory"),
)
KEYWORDS = (
    ("model", None, "the model, so normalization layers update their running statistics once per update"),
    ("grad_scaler", None, "the ``torch.amp.GradScaler`` of fp16 autocast (the engine unscales and steps it)"),
    ("distributed", None, "``sam_plugins.Distributed`` settings for data-parallel training"),
    ("group_keys", (), "param-group keys a framework puts in the groups and reads itself (timm's ``lr_scale``…)"),
)
BASE_KWARGS = "keywords of the base optimizer (``lr``, ``momentum``, ``betas``, ``weight_decay``…)"


def constructor_signature(cls: type[SharpnessAware]) -> inspect.Signature:
    """The constructor's signature with the declared hyperparameters as keyword arguments."""
    P = inspect.Parameter
    params = [P(name, P.POSITIONAL_OR_KEYWORD, default=default) for name, default, _ in LEADING]
    params += [P(name, P.KEYWORD_ONLY, default=default) for name, default, _ in KEYWORDS]
    params += [P(h.name, P.KEYWORD_ONLY, default=h.default, annotation=h.kind) for h in cls.hyperparameters]
    params.append(P("base_kwargs", P.VAR_KEYWORD))
    return inspect.Signature(params)


def constructor_docstring(summary: str, cls: type[SharpnessAware]) -> str:
    """``summary`` (the class's own docstring) followed by an ``Args:`` section for every keyword."""
    lines = [inspect.cleandoc(summary), "", "Args:"]
    entries = [(name, text) for name, _, text in LEADING]
    for h in cls.hyperparameters:
        scope = ", per group" if h.per_group else ""
        entries.append((f"{h.name} ({h.kind.__name__}, default {h.default!r}{scope})",
                        f"{h.help}. Allowed: {h.allowed()}."))
    entries += [(name, text) for name, _, text in KEYWORDS]
    entries.append(("**base_kwargs", BASE_KWARGS))
    for head, text in entries:
        lines += textwrap.wrap(f"{head}: {text}", width=100, initial_indent="    ", subsequent_indent="        ")
    return "\n".join(lines) + "\n"
