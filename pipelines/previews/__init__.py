"""Per-branch preview environments: cost estimates priced from the synthesized stacks (pricing),
finding them by tag through each cloud's lister in gpufleet/clouds (inventory), up/down and the
expiry sweep (lifecycle). Plain Python: nothing here imports cdktf; only the synth subprocesses do."""
