"""The training and evaluation benchmark (scripts/benchmark.py): clock, sides, report and the parent that runs them.

  clock.py       StepClock and side a's timing callback      sides.py    training sides b, c, l and the import floor
  evaluation.py  IWAE sides: vae_lab vs a straightforward loop  worker.py  a child process running one side
  report.py      medians, ratios, verdicts, the printed table  runner.py   the parent: check, data, launch, summarise
  data_throughput.py  images/s of the streaming data path against the in-memory one
"""
