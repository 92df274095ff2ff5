"""The model store on Azure: a Blob container (Triton repository layout under a prefix) in a hardened,
geo-replicated storage account."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from constructs import Construct

from modules.azure.secure_storage_account import (
    SecureStorageAccount,
    SecureStorageAccountProps,
    blob_url,
)


@dataclass(frozen=True)
class BlobModelStoreProps:
    account_name: str
    container_name: str
    prefix: str  # models live under <container>/<prefix>/<model>/<version>/
    resource_group_name: str
    location: str
    audit_log_workspace_id: str
    replication_type: str = "GRS"
    # Who publishes engines and rollout state (Storage Blob Data Contributor on the container).
    writer_principal_ids: Sequence[str] = ()
    tags: Mapping[str, str] = field(default_factory=dict)


class BlobModelStore(Construct):
    """Readers (Triton) get their role in the cluster stacks (triton_identity.py), scoped to the container."""

    account_name: str
    container_name: str
    container_id: str
    url: str  # https://<account>.blob.core.windows.net/<container>/<prefix>

    def __init__(self, scope: Construct, construct_id: str, props: BlobModelStoreProps) -> None:
        super().__init__(scope, construct_id)
        self.storage = SecureStorageAccount(
            self,
            "storage",
            SecureStorageAccountProps(
                account_name=props.account_name,
                container_name=props.container_name,
                resource_group_name=props.resource_group_name,
                location=props.location,
                replication_type=props.replication_type,
                audit_log_workspace_id=props.audit_log_workspace_id,
                writer_principal_ids=props.writer_principal_ids,
                tags=props.tags,
            ),
        )
        self.account_name = props.account_name
        self.container_name = props.container_name
        self.container_id = self.storage.container_id
        self.url = blob_url(props.account_name, props.container_name, props.prefix)
