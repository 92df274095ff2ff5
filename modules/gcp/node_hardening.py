"""node_config settings every gpufleet GKE node pool shares (GPU and system pools alike)."""

from __future__ import annotations

NODE_OAUTH_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)  # access is limited by IAM roles
NODE_IMAGE_TYPE = "COS_CONTAINERD"


def hardened_node_settings(service_account_email: str) -> dict[str, object]:
    """node_config entries every gpufleet node pool shares: least-privilege identity, shielded VM,
    Workload Identity metadata server, no legacy metadata endpoints, Container-Optimized OS."""
    return {
        "service_account": service_account_email,
        "oauth_scopes": list(NODE_OAUTH_SCOPES),
        "image_type": NODE_IMAGE_TYPE,
        "shielded_instance_config": {"enable_secure_boot": True, "enable_integrity_monitoring": True},
        # Pods see the GKE metadata server (Workload Identity), never the node's own credentials.
        "workload_metadata_config": {"mode": "GKE_METADATA"},
        "metadata": {"disable-legacy-endpoints": "true"},
    }
