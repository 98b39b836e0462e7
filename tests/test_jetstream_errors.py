"""How JetStream's transport failures reach callers: as the operation's Dapr code, retryable."""

from __future__ import annotations

import nats.errors
import pytest
from nats.js.errors import ServiceUnavailableError

from kernel.errors import Codes, NatriumError
from kernel.jetstream import transport_errors_as


def failing(exc: Exception):  # type: ignore[no-untyped-def]
    @transport_errors_as(Codes.STATE_GET)
    async def read() -> None:
        raise exc

    return read


@pytest.mark.parametrize(
    "exc",
    [
        # What a stream answers while it elects a leader after a partition (seen in the cluster test).
        ServiceUnavailableError(code=503, err_code=10008, description="JetStream system temporarily unavailable"),
        nats.errors.TimeoutError(),
        nats.errors.NoRespondersError(),
    ],
)
async def test_a_transient_jetstream_failure_is_a_retryable_error_of_the_operation(exc: Exception) -> None:
    with pytest.raises(NatriumError) as caught:
        await failing(exc)()
    assert caught.value.code == Codes.STATE_GET
    assert caught.value.retryable


async def test_an_oversized_message_is_a_final_500() -> None:
    with pytest.raises(NatriumError) as caught:
        await failing(nats.errors.MaxPayloadError())()
    assert caught.value.status == 500 and not caught.value.retryable
