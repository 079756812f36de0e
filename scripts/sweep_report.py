"""The report of a sweep: CSV, Markdown and heatmaps (configs/sweep_report.yaml, --help). Installed as `vae-lab-sweep-report`."""

from vae_lab.cli.sweep_report import main

if __name__ == "__main__":
    main()
