"""cdktf constructs for Azure: AKS, GPU node pools, Blob model store, managed identities, remote state.

Each module imports its azurerm provider classes inside the construct, so importing a module here costs
nothing until a stack is built.
"""
