"""Ocean's policy refusal: the request field it concerns and Ocean's error code, as the Provider reports them.

Raised by the compute policy (provider_api/policy.py) and by the container check every side shares
(c2d_core/ocean/checksums.py); the Provider turns it into `{"error": {resource: code}}`.
"""

from __future__ import annotations


class PolicyError(Exception):
    """A policy refusal: `resource` is Ocean's key (`dataset.serviceId`, `datasets[1]`, `algorithm`…),
    `code` Ocean's code, `message` a sentence for humans (never a URL)."""

    def __init__(self, resource: str, code: str, message: str) -> None:
        super().__init__(message)
        self.resource = resource
        self.code = code
        self.message = message

    @property
    def wire(self) -> dict[str, str]:
        """The value of Ocean's `error` key: `{"dataset": "not_trusted_algo"}`."""
        return {self.resource: self.code}
