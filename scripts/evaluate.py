"""Evaluate a trained VAE: ELBO, IWAE log p(x), bits/dim, SSIM/PSNR, active units (configs/evaluate.yaml, --help). Installed as `vae-lab-evaluate`."""

from vae_lab.cli.evaluate import main

if __name__ == "__main__":
    main()
