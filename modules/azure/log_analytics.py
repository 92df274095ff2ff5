"""A Log Analytics workspace: where AKS (Container Insights) and storage audit logs go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from constructs import Construct

WORKSPACE_NAME_MAX_LENGTH = 63


@dataclass(frozen=True)
class LogAnalyticsWorkspaceProps:
    name: str  # 4-63 letters, digits and '-', starting and ending with a letter or digit
    resource_group_name: str
    location: str
    retention_days: int = 30  # the free retention period; longer costs per GB
    # Daily ingestion cap in GB (-1: none). Previews cap it so a noisy preview cannot run up a bill.
    daily_quota_gb: float = -1
    tags: Mapping[str, str] = field(default_factory=dict)


class LogAnalyticsWorkspace(Construct):
    workspace_id: str

    def __init__(self, scope: Construct, construct_id: str, props: LogAnalyticsWorkspaceProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_azurerm.log_analytics_workspace import (
            LogAnalyticsWorkspace as AzurermLogAnalyticsWorkspace,
        )

        self.workspace = AzurermLogAnalyticsWorkspace(
            self,
            "workspace",
            name=props.name,
            resource_group_name=props.resource_group_name,
            location=props.location,
            sku="PerGB2018",
            retention_in_days=props.retention_days,
            daily_quota_gb=props.daily_quota_gb,
            # Entra ID only: the AKS monitoring agent authenticates with its managed identity
            # (msi_auth_for_monitoring_enabled), so no workspace keys are needed anywhere.
            local_authentication_enabled=False,
            tags=dict(props.tags),
        )
        self.workspace_id = self.workspace.id
