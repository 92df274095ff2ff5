"""cdktf constructs for Google Cloud (GKE GPU clusters, GCS model store, state backend).

Empty on purpose: each module imports only the provider submodules it uses, lazily, because the
provider bindings are slow to import.
"""
