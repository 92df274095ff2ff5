"""`gpufleet configure`: stack outputs -> inventory and extra vars; Helm values of the cluster roles."""
