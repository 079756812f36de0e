"""vae_lab's training and evaluation throughput against hand-written loops (configs/benchmark.yaml, --help; the
library is vae_lab/bench/). Installed as `vae-lab-benchmark`."""

from vae_lab.cli.benchmark import main

if __name__ == "__main__":
    main()
