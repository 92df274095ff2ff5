"""Per-branch preview environments: cost estimates (pricing), finding them by tag (inventory),
up/down and the expiry sweep (lifecycle). Plain Python: nothing here imports cdktf; only the synth
subprocesses do."""
