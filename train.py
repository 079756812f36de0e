"""Train a VAE: `python train.py [group=option ...] [key=value ...]` (see `python train.py --help`)."""

from vae_lab.startup import check_memory_limit, exit_on_ctrl_c

exit_on_ctrl_c()  # before the imports: a Ctrl-C while they load is one line and exit 130 too
check_memory_limit()  # `import torch` dies without a Python error under a small ulimit -v
from vae_lab.cli.train import main  # noqa: E402

if __name__ == "__main__":
    main()
