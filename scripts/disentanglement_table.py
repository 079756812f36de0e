"""Disentanglement scores of trained runs and a mean +- std table per objective (configs/disentanglement_table.yaml,
--help). Installed as `vae-lab-disentanglement-table`."""

from vae_lab.cli.disentanglement_table import main

if __name__ == "__main__":
    main()
