"""A hardened storage account with one private blob container: the base of the model store and of the
Terraform state backend.

Access is Entra ID only: shared keys, SAS signed with them, local (SFTP) users and anonymous blob access
are all off, so every read and write is an identity with a data role, and shows in the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from constructs import Construct

from modules.checkov import skip_checks

STORAGE_ACCOUNT_NAME_MAX_LENGTH = 24  # 3-24 lowercase letters and digits, globally unique
CONTAINER_NAME_MAX_LENGTH = 63  # 3-63 lowercase letters, digits and single '-'
BLOB_DATA_CONTRIBUTOR = "Storage Blob Data Contributor"
# Blob service categories written to the audit log: who read, wrote or deleted which blob.
AUDIT_LOG_CATEGORIES = ("StorageRead", "StorageWrite", "StorageDelete")

# Why the network stays reachable from the internet (always behind Entra ID authorization).
PUBLIC_NETWORK_REASON = (
    "reachable over the internet, but only with Entra ID credentials (shared keys, SAS and anonymous access "
    "are off): Terraform, the engine pipeline and the rollout driver run on operator and CI machines "
    "outside any VNet, the same access model as the S3 and GCS stores; fleet.yaml has no list of allowed "
    "networks to restrict it to"
)


@dataclass(frozen=True, kw_only=True)
class StorageAccountSettings:
    """What the owner of a SecureStorageAccount (the model store, the state backend) is given by its stack;
    the owner names the container."""

    account_name: str  # 3-24 lowercase letters and digits, globally unique
    resource_group_name: str
    location: str
    audit_log_workspace_id: str
    replication_type: str = "GRS"
    # Identities allowed to write blobs in the container (Storage Blob Data Contributor on it).
    writer_principal_ids: Sequence[str] = ()
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SecureStorageAccountProps:
    account_name: str  # 3-24 lowercase letters and digits, globally unique
    container_name: str
    resource_group_name: str
    location: str
    replication_type: str  # GRS: a copy in the paired region survives a regional outage
    audit_log_workspace_id: str
    # Identities allowed to write blobs in the container (Storage Blob Data Contributor on it).
    writer_principal_ids: Sequence[str] = ()
    soft_delete_days: int = 30  # deleted or overwritten blobs and containers can be restored this long
    tags: Mapping[str, str] = field(default_factory=dict)


class SecureStorageAccount(Construct):
    account_name: str
    account_id: str
    container_name: str
    container_id: str  # resource manager id (…/blobServices/default/containers/<name>): a role scope

    def __init__(self, scope: Construct, construct_id: str, props: SecureStorageAccountProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_azurerm.monitor_diagnostic_setting import (
            MonitorDiagnosticSetting,
            MonitorDiagnosticSettingEnabledLog,
        )
        from cdktf_cdktf_provider_azurerm.role_assignment import RoleAssignment
        from cdktf_cdktf_provider_azurerm.storage_account import (
            StorageAccount,
            StorageAccountBlobProperties,
            StorageAccountBlobPropertiesContainerDeleteRetentionPolicy,
            StorageAccountBlobPropertiesDeleteRetentionPolicy,
            StorageAccountSasPolicy,
        )
        from cdktf_cdktf_provider_azurerm.storage_container import StorageContainer

        self.account = StorageAccount(
            self,
            "account",
            name=props.account_name,
            resource_group_name=props.resource_group_name,
            location=props.location,
            account_kind="StorageV2",
            account_tier="Standard",
            account_replication_type=props.replication_type,
            access_tier="Hot",
            https_traffic_only_enabled=True,
            min_tls_version="TLS1_2",
            # Entra ID only (see the module docstring).
            shared_access_key_enabled=False,
            default_to_oauth_authentication=True,
            allow_nested_items_to_be_public=False,
            local_user_enabled=False,
            sftp_enabled=False,
            # Copies only within this tenant (object replication to another tenant's account is off).
            cross_tenant_replication_enabled=False,
            allowed_copy_scope="AAD",
            public_network_access_enabled=True,
            # Data encrypted twice at rest (service + infrastructure layer, independent keys).
            infrastructure_encryption_enabled=True,
            # Any user-delegation SAS someone creates expires within a day.
            sas_policy=StorageAccountSasPolicy(expiration_period="01.00:00:00", expiration_action="Log"),
            blob_properties=StorageAccountBlobProperties(
                # Every overwrite keeps the previous version: a bad engine upload or a corrupted state
                # file can be rolled back.
                versioning_enabled=True,
                change_feed_enabled=True,
                change_feed_retention_in_days=props.soft_delete_days,
                delete_retention_policy=StorageAccountBlobPropertiesDeleteRetentionPolicy(
                    days=props.soft_delete_days
                ),
                container_delete_retention_policy=(
                    StorageAccountBlobPropertiesContainerDeleteRetentionPolicy(days=props.soft_delete_days)
                ),
            ),
            tags=dict(props.tags),
        )
        skip_checks(
            self.account,
            {
                "CKV_AZURE_59": PUBLIC_NETWORK_REASON,
                "CKV2_AZURE_33": (
                    "no private endpoint: clients outside Azure must reach the account (see CKV_AZURE_59); "
                    "access is authorized per identity by Entra ID"
                ),
                "CKV2_AZURE_1": (
                    "encrypted at rest with Microsoft-managed keys plus infrastructure encryption (double "
                    "encryption); customer-managed keys need a Key Vault with purge protection whose custody "
                    "belongs to the organisation's key management, not to this stack"
                ),
                "CKV_AZURE_33": (
                    "no queues are used; queue logging is configured through the storage data plane, which "
                    "this provider is told not to use (Entra-only account); blob reads, writes and deletes "
                    "go to Log Analytics through a diagnostic setting"
                ),
            },
        )
        # Created through the resource manager (storage_account_id), not the data plane: no keys needed.
        self.container = StorageContainer(
            self,
            "container",
            name=props.container_name,
            storage_account_id=self.account.id,
            container_access_type="private",
        )
        skip_checks(
            self.container,
            {
                "CKV2_AZURE_21": (
                    "blob read/write/delete requests are logged by a diagnostic setting on the blob service "
                    "to Log Analytics; the check only recognises the legacy Storage Insights resource, which "
                    "needs the (disabled) account key"
                ),
            },
        )
        self.audit_log = MonitorDiagnosticSetting(
            self,
            "blob-audit-log",
            name="blob-audit-log",
            target_resource_id=f"{self.account.id}/blobServices/default",
            log_analytics_workspace_id=props.audit_log_workspace_id,
            enabled_log=[MonitorDiagnosticSettingEnabledLog(category=c) for c in AUDIT_LOG_CATEGORIES],
        )
        self.writer_role_assignments = [
            RoleAssignment(
                self,
                f"writer-{index}",
                scope=self.container.id,
                role_definition_name=BLOB_DATA_CONTRIBUTOR,
                principal_id=principal_id,
            )
            for index, principal_id in enumerate(props.writer_principal_ids)
        ]

        self.account_name = props.account_name
        self.account_id = self.account.id
        self.container_name = props.container_name
        self.container_id = self.container.id


def storage_account_with_container(
    scope: Construct, settings: StorageAccountSettings, container_name: str
) -> SecureStorageAccount:
    """The SecureStorageAccount `storage` in `scope`, as `settings` say, holding the container."""
    return SecureStorageAccount(
        scope,
        "storage",
        SecureStorageAccountProps(
            account_name=settings.account_name,
            container_name=container_name,
            resource_group_name=settings.resource_group_name,
            location=settings.location,
            replication_type=settings.replication_type,
            audit_log_workspace_id=settings.audit_log_workspace_id,
            writer_principal_ids=settings.writer_principal_ids,
            tags=settings.tags,
        ),
    )


def blob_container_resource_id(
    subscription_id: str, resource_group: str, account_name: str, container_name: str
) -> str:
    """The resource manager id of a blob container in another stack (a role assignment scope)."""
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/Microsoft.Storage/"
        f"storageAccounts/{account_name}/blobServices/default/containers/{container_name}"
    )


def blob_url(account_name: str, container_name: str, prefix: str = "") -> str:
    url = f"https://{account_name}.blob.core.windows.net/{container_name}"
    return f"{url}/{prefix}" if prefix else url
