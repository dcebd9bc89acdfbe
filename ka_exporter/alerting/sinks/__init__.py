"""The kinds of sink a config can name, each built from its option table.

`build(name, options)` validates every option up front (ValueError("<key>: <message>")), so a
bad sink fails the config check, not the first alert.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ka_exporter.alerting.sink import Sink
from ka_exporter.alerting.sinks import alertmanager, slack, smtp, webhook

SINK_TYPES: dict[str, Callable[[str, Mapping[str, object]], Sink]] = {
    "smtp": smtp.build,
    "webhook": webhook.build,
    "alertmanager": alertmanager.build,
    "slack": slack.build,
}
