"""Ocean's metadata states: the `metaDataState` a data NFT (ERC721Template) carries, and which allow use."""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from c2d_core.chain import Chain


class MetadataState(IntEnum):
    ACTIVE = 0
    END_OF_LIFE = 1
    DEPRECATED = 2
    REVOKED = 3
    ORDERING_DISABLED = 4
    UNLISTED = 5

    @property
    def label(self) -> str:
        """The state for people: `end of life`, `ordering disabled`…"""
        return self.name.lower().replace("_", " ")


# As in Ocean, only an active or an unlisted asset may be ordered or computed on.
CONSUMABLE_STATES: Final = frozenset({MetadataState.ACTIVE, MetadataState.UNLISTED})


def state_label(state: int) -> str:
    """The label of a state read from the chain; `unknown` for a value the contracts do not define."""
    try:
        return MetadataState(state).label
    except ValueError:
        return "unknown"


def read_metadata_state(chain: Chain, nft: str) -> int:
    """The NFT's current metadata state, read from the contract rather than from its last metadata event
    (a state change alone emits no MetadataUpdated)."""
    return int(chain.contracts.at("ERC721Template", nft).functions.getMetaData().call()[2])
