"""The model store on Azure: a Blob container (Triton repository layout under a prefix) in a hardened,
geo-replicated storage account."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct

from modules.azure.secure_storage_account import (
    StorageAccountSettings,
    blob_url,
    storage_account_with_container,
)


@dataclass(frozen=True, kw_only=True)
class BlobModelStoreProps(StorageAccountSettings):
    """writer_principal_ids: who publishes engines and rollout state (Storage Blob Data Contributor on the
    container)."""

    container_name: str
    prefix: str  # models live under <container>/<prefix>/<model>/<version>/


class BlobModelStore(Construct):
    """Readers (Triton) get their role in the cluster stacks (triton_identity.py), scoped to the container."""

    account_name: str
    container_name: str
    container_id: str
    url: str  # https://<account>.blob.core.windows.net/<container>/<prefix>

    def __init__(self, scope: Construct, construct_id: str, props: BlobModelStoreProps) -> None:
        super().__init__(scope, construct_id)
        self.storage = storage_account_with_container(self, props, props.container_name)
        self.account_name = props.account_name
        self.container_name = props.container_name
        self.container_id = self.storage.container_id
        self.url = blob_url(props.account_name, props.container_name, props.prefix)
