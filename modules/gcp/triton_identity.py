"""Google identity for Triton: read-only on the model store, used through Workload Identity."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct


@dataclass(frozen=True)
class TritonIdentityProps:
    account_id: str  # 6-30 characters (see node_service_account.SERVICE_ACCOUNT_ID_MAX_LENGTH)
    project: str
    store_bucket: str  # bucket name; the bucket itself lives in the environment's shared stack
    workload_pool: str  # <project>.svc.id.goog
    namespace: str = "triton"
    kubernetes_service_account: str = "triton"


class TritonIdentity(Construct):
    """A Google service account that only reads the store bucket, impersonated by Triton's pods.

    The Kubernetes service account must carry the annotation
    iam.gke.io/gcp-service-account=<email> (set by the serving layer from the stack output).
    """

    email: str

    def __init__(self, scope: Construct, construct_id: str, props: TritonIdentityProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_google.service_account import ServiceAccount
        from cdktf_cdktf_provider_google.service_account_iam_member import ServiceAccountIamMember
        from cdktf_cdktf_provider_google.storage_bucket_iam_member import StorageBucketIamMember

        self.service_account = ServiceAccount(
            self,
            "account",
            account_id=props.account_id,
            project=props.project,
            display_name="Triton model store reader",
        )
        self.email = self.service_account.email
        # On the bucket only (not the project): the identity can read models, nothing else.
        self.store_reader = StorageBucketIamMember(
            self,
            "store-reader",
            bucket=props.store_bucket,
            role="roles/storage.objectViewer",
            member=f"serviceAccount:{self.service_account.email}",
        )
        self.workload_identity = ServiceAccountIamMember(
            self,
            "workload-identity",
            service_account_id=self.service_account.name,
            role="roles/iam.workloadIdentityUser",
            member=(
                f"serviceAccount:{props.workload_pool}[{props.namespace}/{props.kubernetes_service_account}]"
            ),
        )
