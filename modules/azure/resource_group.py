"""An Azure resource group: the unit every stack's resources live in (and are destroyed with)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from constructs import Construct

RESOURCE_GROUP_NAME_MAX_LENGTH = 90


@dataclass(frozen=True)
class ResourceGroupProps:
    name: str  # 1-90 letters, digits, '_', '-', '.', '(' and ')', not ending with '.'
    location: str
    tags: Mapping[str, str] = field(default_factory=dict)


class ResourceGroup(Construct):
    """One resource group per stack, so `cdktf destroy` (or a preview sweep) removes exactly that stack."""

    name: str
    location: str

    def __init__(self, scope: Construct, construct_id: str, props: ResourceGroupProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_azurerm.resource_group import ResourceGroup as AzurermResourceGroup

        self.resource_group = AzurermResourceGroup(
            self, "group", name=props.name, location=props.location, tags=dict(props.tags)
        )
        # A reference, not the literal: resources placed in the group must be created after it.
        self.name = self.resource_group.name
        self.location = props.location
