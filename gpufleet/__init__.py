"""gpufleet: declare a GPU inference fleet in one fleet.yaml and run it locally or on EKS/GKE/AKS."""

__version__ = "0.1.0"
