"""Provider fees: what a compute job costs in its environment, the signed fee quotes consumers order
with (compute and access), and the check that a job's orders paid enough.

A quote is bound (c2d_core.fees.provider_data) to the environment, datatoken, service, DID and
consumer, and signed with the Provider's fee key, so the order that carries it cannot be reused for
another asset, another consumer or another environment.

Validity is judged by `now()`, the later of wall-clock and chain time, when a quote is made and when
its order is checked: an idle chain's latest block lags wall time (anvil mines only on demand), while
the order's own block is mined at about wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from provider_api.errors import resource_error
from provider_api.orders import OrderError, ValidatedOrder, ensure_fee_paid

if TYPE_CHECKING:
    from c2d_core.chain import Chain
    from c2d_core.environments import Environment
    from provider_api.settings import ProviderSettings


class ProviderFees:
    """Quotes and checks the Provider's fees; one per Provider process."""

    def __init__(
        self, settings: ProviderSettings, chain: Chain, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.chain = chain
        self.clock = clock

    def now(self) -> int:
        """The time validity is judged by: the later of wall-clock and the latest block's timestamp.

        Chain time alone lags on an idle chain, so a quote's validUntil from it can be in the past by the
        time its order is mined. The later of the two is never before the order's block.timestamp, which
        is what the contracts compare validUntil with.
        """
        return max(int(self.clock()), self.chain.block_timestamp())

    def fee_token_of(self, env: Environment) -> str:
        return env.fee_token or self.chain.address("Ocean")

    def fee_amount(self, env: Environment, seconds: int) -> int:
        from c2d_core.fees import fee_amount

        return fee_amount(str(env.price_min), max(seconds, 0))

    def quote(
        self,
        env: Environment,
        datatoken: str,
        service_id: str,
        did: str,
        consumer: str,
        valid_until: int,
        paying: bool,
    ) -> dict[str, Any]:
        """A provider fee bound to this environment, datatoken, service, DID and consumer."""
        now = self.now()
        amount = self.fee_amount(env, valid_until - now) if paying else 0
        return self._signed_fee(
            env.id, self.fee_token_of(env), datatoken, service_id, did, consumer, amount, valid_until, now
        )

    def access_fee(self, datatoken: str, service_id: str, did: str, consumer: str) -> dict[str, Any]:
        """Ocean's access fee: amount 0 and validUntil 0 (never expires), bound like a compute fee to
        the datatoken, service, DID and consumer; `environment` is null, as Ocean's Provider sends it."""
        now = self.chain.block_timestamp()
        return self._signed_fee(
            None, self.chain.address("Ocean"), datatoken, service_id, did, consumer, 0, 0, now
        )

    def ensure_paid(self, env: Environment, orders: list[ValidatedOrder]) -> None:
        """One input must have paid, in the environment's fee token, what the job costs until validUntil."""
        if env.price_min <= 0:
            return
        now = self.now()
        valid_until = max(int(order.valid_until) for order in orders)
        required = self.fee_amount(env, valid_until - now)
        try:
            ensure_fee_paid(orders, required, self.fee_token_of(env))
        except OrderError:
            raise resource_error("order", "fees_not_paid") from None

    def _signed_fee(
        self,
        environment: str | None,
        fee_token: str,
        datatoken: str,
        service_id: str,
        did: str,
        consumer: str,
        amount: int,
        valid_until: int,
        timestamp: int,
    ) -> dict[str, Any]:
        from c2d_core.fees import provider_data, sign_provider_fee

        data = provider_data(
            environment=environment,
            datatoken=datatoken,
            service_id=service_id,
            did=did,
            consumer=consumer,
            timestamp=timestamp,
        )
        fee = sign_provider_fee(
            self.settings.private_key_hex,
            data,
            self.settings.address,
            fee_token,
            amount,
            valid_until,
        )
        return fee.to_wire()
