"""cdktf constructs, one per concept (GPU cluster per cloud, model store, network, state backend)."""
