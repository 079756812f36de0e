"""Pictures of a trained VAE: samples, reconstructions, interpolations, traversals, latent plots (configs/sample.yaml,
--help). Installed as `vae-lab-sample`."""

from vae_lab.cli.sample import main

if __name__ == "__main__":
    main()
