"""Remote Terraform state on Azure Blob: the account + `tfstate` container (in the shared stack) and the
backend of the cluster stacks.

The azurerm backend locks state with a blob lease on the state file itself; nothing else is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cdktf import AzurermBackend, TerraformStack
from constructs import Construct

from modules.azure.secure_storage_account import SecureStorageAccount, SecureStorageAccountProps

STATE_CONTAINER_NAME = "tfstate"


@dataclass(frozen=True)
class StateBackendProps:
    account_name: str
    resource_group_name: str
    location: str
    audit_log_workspace_id: str
    replication_type: str = "GRS"
    # Who runs `cdktf deploy` for this environment: reads and writes state blobs (Entra ID, no keys).
    writer_principal_ids: Sequence[str] = ()
    tags: Mapping[str, str] = field(default_factory=dict)


class StateBackend(Construct):
    """Private, versioned container for the environment's (and its previews') Terraform state."""

    account_name: str
    container_name: str

    def __init__(self, scope: Construct, construct_id: str, props: StateBackendProps) -> None:
        super().__init__(scope, construct_id)
        self.storage = SecureStorageAccount(
            self,
            "storage",
            SecureStorageAccountProps(
                account_name=props.account_name,
                container_name=STATE_CONTAINER_NAME,
                resource_group_name=props.resource_group_name,
                location=props.location,
                replication_type=props.replication_type,
                audit_log_workspace_id=props.audit_log_workspace_id,
                writer_principal_ids=props.writer_principal_ids,
                tags=props.tags,
            ),
        )
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
