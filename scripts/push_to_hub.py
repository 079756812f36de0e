"""Upload a trained run's artifact to the Hugging Face Hub (configs/push_to_hub.yaml, --help). Installed as `vae-lab-push`."""

from vae_lab.cli.push import main

if __name__ == "__main__":
    main()
