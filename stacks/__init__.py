"""cdktf stacks built from fleet.yaml: one stack per cloud cluster plus one shared stack per environment.

The stacks themselves arrive with the cloud-stacks work (see the issue tracker); this package is
where `cdktf.json`'s app (`python -m stacks`) lives. Only `stacks/` and `modules/` import cdktf.
"""
