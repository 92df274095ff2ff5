"""Remote Terraform state on Azure Blob: the account + `tfstate` container (in the shared stack) and the
backend of the cluster stacks.

The azurerm backend locks state with a blob lease on the state file itself; nothing else is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdktf import AzurermBackend, TerraformStack
from constructs import Construct

from modules.azure.secure_storage_account import StorageAccountSettings, storage_account_with_container

STATE_CONTAINER_NAME = "tfstate"


@dataclass(frozen=True, kw_only=True)
class StateBackendProps(StorageAccountSettings):
    """writer_principal_ids: who runs `cdktf deploy` for this environment: reads and writes state blobs
    (Entra ID, no keys)."""


class StateBackend(Construct):
    """Private, versioned container for the environment's (and its previews') Terraform state."""

    account_name: str
    container_name: str

    def __init__(self, scope: Construct, construct_id: str, props: StateBackendProps) -> None:
        super().__init__(scope, construct_id)
        self.storage = storage_account_with_container(self, props, STATE_CONTAINER_NAME)
        self.account_name = props.account_name
        self.container_name = STATE_CONTAINER_NAME


def use_azurerm_state(
    stack: TerraformStack, resource_group_name: str, account_name: str, state_key: str
) -> AzurermBackend:
    """Keep `stack`'s state at <account>/tfstate/<state_key>, authenticated with Entra ID (the account
    accepts no shared keys); the caller needs Storage Blob Data Contributor on the container."""
    return AzurermBackend(
        stack,
        resource_group_name=resource_group_name,
        storage_account_name=account_name,
        container_name=STATE_CONTAINER_NAME,
        key=state_key,
        use_azuread_auth=True,
    )
