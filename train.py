"""Train a VAE: `python train.py [group=option ...] [key=value ...]` (see `python train.py --help`)."""

from vae_lab.cli.train import main

if __name__ == "__main__":
    main()
