"""The Google service account GKE nodes run as: least privilege instead of the Compute default account."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct

# What a GKE node itself needs (Google's "least privilege service account for nodes" guidance): ship
# logs and metrics, read monitoring config, pull images from Artifact Registry. Workloads get their own
# identities through Workload Identity, never these.
NODE_ROLES: tuple[str, ...] = (
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/artifactregistry.reader",
)

# Service account ids: 6-30 lowercase letters, digits and '-', starting with a letter.
SERVICE_ACCOUNT_ID_MAX_LENGTH = 30


@dataclass(frozen=True)
class GkeNodeServiceAccountProps:
    account_id: str  # 6-30 characters, see SERVICE_ACCOUNT_ID_MAX_LENGTH
    project: str
    display_name: str


class GkeNodeServiceAccount(Construct):
    """A dedicated node service account with only NODE_ROLES on the project."""

    email: str

    def __init__(self, scope: Construct, construct_id: str, props: GkeNodeServiceAccountProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_google.project_iam_member import ProjectIamMember
        from cdktf_cdktf_provider_google.service_account import ServiceAccount

        self.service_account = ServiceAccount(
            self,
            "account",
            account_id=props.account_id,
            project=props.project,
            display_name=props.display_name,
        )
        self.email = self.service_account.email
        member = f"serviceAccount:{self.service_account.email}"
        self.role_bindings = [
            ProjectIamMember(
                self,
                f"role-{role.removeprefix('roles/').replace('.', '-')}",
                project=props.project,
                role=role,
                member=member,
            )
            for role in NODE_ROLES
        ]
