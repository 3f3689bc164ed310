"""Trusted-algorithm checksums as Ocean computes them: an algorithm's files and its container section, the
container rules they rest on, and the `publisherTrustedAlgorithms` entry that pins both.

The Provider checks a published algorithm against these; the publisher's CLI and the demo compute them
to write the trust entry.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from c2d_core.ocean.refusals import PolicyError
from c2d_core.workflow import DID_PATTERN

_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
_IMAGE_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")


def validate_container(container: object, resource: str = "algorithm.container") -> None:
    """An algorithm container: entrypoint, image and checksum set; checksum a `sha256:` image digest.

    Besides Ocean's two rules (`missing_entrypoint_image_checksum`, `checksum_prefix`) the checksum must
    be a whole image digest (`checksum_format`): the engine pulls `image@checksum`, so anything else would
    fail only after the consumer has paid. Also backs the validateContainer route, which answers
    `{"error": err.code}`.
    """
    fields = container if isinstance(container, dict) else {}
    missing = [key for key in ("entrypoint", "image", "checksum") if not _text(fields.get(key))]
    if missing:
        raise PolicyError(
            resource,
            "missing_entrypoint_image_checksum",
            f"the container needs a non-empty entrypoint, image and checksum (missing: {', '.join(missing)})",
        )
    checksum = fields["checksum"]
    if not checksum.startswith("sha256:"):
        raise PolicyError(resource, "checksum_prefix", "the container checksum must start with 'sha256:'")
    if not _IMAGE_DIGEST.fullmatch(checksum):
        raise PolicyError(
            resource,
            "checksum_format",
            "the container checksum must be 'sha256:' and 64 lowercase hex digits",
        )


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def container_section_checksum(container: Mapping[str, Any]) -> str:
    """sha256 hex of `entrypoint + checksum` (plain concatenation), as Ocean computes it."""
    entrypoint, checksum = container.get("entrypoint"), container.get("checksum")
    if not isinstance(entrypoint, str) or not isinstance(checksum, str):
        raise ValueError("a container needs string 'entrypoint' and 'checksum' fields")
    return hashlib.sha256((entrypoint + checksum).encode("utf-8")).hexdigest()


def files_checksum(sha256_hexes: Sequence[str]) -> str:
    """An algorithm's `filesChecksum`: its files' content sha256 hex digests, concatenated in files order."""
    if not sha256_hexes:
        raise ValueError("an algorithm has at least one file")
    for digest in sha256_hexes:
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise ValueError("each file checksum must be a sha256 hex digest (64 hex digits, no prefix)")
    return "".join(digest.lower() for digest in sha256_hexes)


def trusted_algorithm_entry(did: str, files_checksum: str, container: Mapping[str, Any]) -> dict[str, str]:
    """A `publisherTrustedAlgorithms` entry pinning the algorithm's DID, files and container."""
    if not DID_PATTERN.match(did):
        raise ValueError("an algorithm DID looks like did:op:<64 hex digits>")
    digests = files_checksum.lower()
    if not digests or len(digests) % 64 or not re.fullmatch(r"[0-9a-f]+", digests):
        raise ValueError("filesChecksum is one or more sha256 hex digests, concatenated (see files_checksum)")
    validate_container(container)
    return {
        "did": did.lower(),
        "filesChecksum": digests,
        "containerSectionChecksum": container_section_checksum(container),
    }
