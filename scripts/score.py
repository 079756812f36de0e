"""Per-example out-of-distribution scores and AUROC of a trained model (configs/score.yaml, --help). Installed as
`vae-lab-score`."""

from vae_lab.cli.score import main

if __name__ == "__main__":
    main()
