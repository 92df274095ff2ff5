"""Who runs Terraform: subscription, tenant and object id of the signed-in principal (no API call to Azure
resources; read from the provider's credentials)."""

from __future__ import annotations

from constructs import Construct


class AzureClientConfig(Construct):
    subscription_id: str
    tenant_id: str
    object_id: str  # the deploying user, service principal or managed identity

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_azurerm.data_azurerm_client_config import DataAzurermClientConfig

        self.config = DataAzurermClientConfig(self, "current")
        self.subscription_id = self.config.subscription_id
        self.tenant_id = self.config.tenant_id
        self.object_id = self.config.object_id
