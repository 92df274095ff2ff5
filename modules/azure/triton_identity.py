"""Azure identity for Triton: reads the model store container, used from pods through workload identity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from constructs import Construct

from gpufleet.environments import fit_name

IDENTITY_NAME_MAX_LENGTH = 128
FEDERATED_CREDENTIAL_NAME_MAX_LENGTH = 120
BLOB_DATA_READER = "Storage Blob Data Reader"
# The audience AKS workload identity tokens are issued for.
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"


@dataclass(frozen=True)
class TritonIdentityProps:
    name: str  # 3-128 letters, digits, '-' and '_', starting with a letter or digit
    resource_group_name: str
    location: str
    # Resource manager id of the store's blob container (in the shared stack): the only scope granted.
    store_container_id: str
    oidc_issuer_url: str  # the AKS cluster's service account token issuer
    namespace: str = "triton"
    kubernetes_service_account: str = "triton"
    tags: Mapping[str, str] = field(default_factory=dict)


class TritonIdentity(Construct):
    """A user-assigned managed identity that may only read blobs of the store container.

    Triton's Kubernetes service account must carry the annotation
    azure.workload.identity/client-id=<client_id> and its pods the label azure.workload.identity/use=true
    (set by the serving layer from the stack output).
    """

    client_id: str
    principal_id: str
    subject: str

    def __init__(self, scope: Construct, construct_id: str, props: TritonIdentityProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_azurerm.federated_identity_credential import FederatedIdentityCredential
        from cdktf_cdktf_provider_azurerm.role_assignment import RoleAssignment
        from cdktf_cdktf_provider_azurerm.user_assigned_identity import UserAssignedIdentity

        self.identity = UserAssignedIdentity(
            self,
            "identity",
            name=props.name,
            resource_group_name=props.resource_group_name,
            location=props.location,
            tags=dict(props.tags),
        )
        # On the container only (not the account or resource group): the identity reads models, nothing else.
        self.store_reader = RoleAssignment(
            self,
            "store-reader",
            scope=props.store_container_id,
            role_definition_name=BLOB_DATA_READER,
            principal_id=self.identity.principal_id,
            principal_type="ServicePrincipal",
        )
        self.subject = f"system:serviceaccount:{props.namespace}:{props.kubernetes_service_account}"
        # Tokens of exactly this service account, from exactly this cluster's issuer, act as the identity.
        self.federated_credential = FederatedIdentityCredential(
            self,
            "workload-identity",
            name=fit_name(
                props.namespace,
                props.kubernetes_service_account,
                max_length=FEDERATED_CREDENTIAL_NAME_MAX_LENGTH,
            ),
            resource_group_name=props.resource_group_name,
            parent_id=self.identity.id,
            audience=[TOKEN_EXCHANGE_AUDIENCE],
            issuer=props.oidc_issuer_url,
            subject=self.subject,
        )
        self.client_id = self.identity.client_id
        self.principal_id = self.identity.principal_id
