"""Posterior codes, scales and labels of a split as an .npz (configs/encode.yaml, --help). Installed as
`vae-lab-encode`."""

from vae_lab.cli.encode import main

if __name__ == "__main__":
    main()
