"""Pipelines on top of the core: engines (export, build, push), rollout (canary), previews, dr."""
