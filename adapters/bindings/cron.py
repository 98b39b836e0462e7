"""`bindings.cron`: an input binding that fires on a `schedule`, once per tick across all replicas.

The schedule is not a timer in any replica: it is one JetStream message schedule in the binding's
stream (`Nats-Schedule`, `Nats-Schedule-Target`), and the server itself publishes each firing into
the stream, from where every subscribed app gets it once. Forms (Dapr's): six fields with
seconds (`*/5 * * * * *`), five fields (seconds taken as 0), `@every 15s`, `@hourly`, `@daily`,
`@weekly`, `@monthly`, `@yearly`, and a `CRON_TZ=Europe/Berlin ` prefix for a time zone.
"""

from __future__ import annotations

from typing import ClassVar

from adapters.bindings.base import Driver, DriverEnv, invalid
from kernel.components import Component
from kernel.durations import parse_duration

__all__ = ["CronBinding", "SCHEDULE", "SCHEDULE_TARGET", "SCHEDULE_TIME_ZONE"]

SCHEDULE = "Nats-Schedule"
SCHEDULE_TARGET = "Nats-Schedule-Target"
SCHEDULE_TIME_ZONE = "Nats-Schedule-Time-Zone"
_DESCRIPTORS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


class CronBinding(Driver):
    reads: ClassVar[bool] = True

    def __init__(self, component: Component, env: DriverEnv) -> None:
        super().__init__(component, env)
        self.schedule_text = self.required("schedule").strip()
        self.pattern, self.time_zone = _nats_schedule(component, self.schedule_text)

    def schedule_headers(self, target: str) -> dict[str, str]:
        """Headers of the one schedule message that makes the server fire into `target`."""
        headers = {SCHEDULE: self.pattern, SCHEDULE_TARGET: target}
        if self.time_zone:
            headers[SCHEDULE_TIME_ZONE] = self.time_zone
        return headers


def _nats_schedule(component: Component, text: str) -> tuple[str, str | None]:
    """(NATS schedule pattern, time zone) for a Dapr schedule, or a clear component error."""
    zone = None
    for prefix in ("CRON_TZ=", "TZ="):
        if text.startswith(prefix):
            zone, _, text = text[len(prefix) :].partition(" ")
            text = text.strip()
    if text.startswith("@every"):
        interval = text[len("@every") :].strip()
        try:
            seconds = parse_duration(interval)
        except ValueError as exc:
            raise invalid(component, f"schedule {text!r}: {exc}") from None
        if seconds < 1:
            raise invalid(component, f"schedule {text!r}: the shortest interval is 1s")
        return f"@every {interval}", zone
    if text.startswith("@"):
        if text not in _DESCRIPTORS:
            raise invalid(
                component, f"schedule {text!r}: use @every <duration> or one of {', '.join(sorted(_DESCRIPTORS))}"
            )
        return text, zone
    fields = text.split()
    if len(fields) == 5:
        fields.insert(0, "0")
    if len(fields) != 6:
        raise invalid(component, f"schedule {text!r}: a cron schedule has 6 fields (seconds first) or 5")
    return " ".join(fields), zone
