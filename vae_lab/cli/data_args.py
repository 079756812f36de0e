"""`dataset.*` overrides for tools that load a trained model (evaluate, sample).

The data of a loaded model are only known once the model is loaded, so these overrides cannot be composed by the
tool's own Hydra config: they are taken off the command line first, in train.py's syntax (`dataset=<name>`,
`dataset.options.path=...`, `+dataset.x=...`), and applied to the model's data by vae_lab.loading.data_config.
"""

import re

_DATA_OVERRIDE = re.compile(r"^[+~]{0,2}dataset([.=]|$)")


def split_data_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv without the data overrides, the data overrides without their leading '+')."""
    rest, data = [argv[0]], []
    for arg in argv[1:]:
        if _DATA_OVERRIDE.match(arg):
            data.append(arg.lstrip("+"))
        else:
            rest.append(arg)
    return rest, data
