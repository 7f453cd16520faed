"""Prometheus metrics: the core's reports and alerts as gauges and counters, over HTTP.

It only reads actions (tunnel state reports, alerts, everything else counted by type), so
what a scrape shows is exactly what the core decided.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from agent.config import MetricsSettings
from agent.core.actions import Action, PublishAlert, PublishTunnelState
from agent.core.health import Health
from agent.ports import AdapterError

__all__ = ["MetricsExporter"]

log = logging.getLogger("vti_failover.metrics")


class MetricsExporter:
    name = "metrics"

    def __init__(self, settings: MetricsSettings, agent_id: str) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        labels = {"agent": agent_id}
        self.health = Gauge(
            "vti_failover_tunnel_health",
            "1 for the tunnel's current health state, 0 for the others",
            ["tunnel", "state"],
            registry=self.registry,
        )
        self.carrying = Gauge(
            "vti_failover_tunnel_carrying",
            "1 while the tunnel carries traffic",
            ["tunnel"],
            registry=self.registry,
        )
        self.announced = Gauge(
            "vti_failover_tunnel_announced",
            "1 while site prefixes are announced over the tunnel",
            ["tunnel"],
            registry=self.registry,
        )
        self.metric = Gauge(
            "vti_failover_tunnel_route_metric",
            "Route metric via the tunnel (absent when it has no routes)",
            ["tunnel"],
            registry=self.registry,
        )
        self.probe_loss = Gauge(
            "vti_failover_tunnel_probe_loss_ratio",
            "Probes lost of the loss window, as told at mqtt.quality_interval_s",
            ["tunnel"],
            registry=self.registry,
        )
        self.rtt = Gauge(
            "vti_failover_tunnel_rtt_milliseconds",
            "Median RTT of the last rtt_samples probe answers, as told at the same pace",
            ["tunnel"],
            registry=self.registry,
        )
        self.alerts = Counter(
            "vti_failover_alerts",
            "Failovers, failbacks, degradations, both-down and recoveries",
            ["kind"],
            registry=self.registry,
        )
        self.detection = Gauge(
            "vti_failover_last_detection_seconds",
            "For the last alert of each kind: first sign of trouble to decision",
            ["kind"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "vti_failover_learned_rejected",
            "Learned prefixes the import policy refused, by tunnel and reason",
            ["tunnel", "reason"],
            registry=self.registry,
        )
        # The core reports totals; the counter grows by what is new since the last report.
        self._rejected_seen: dict[tuple[str, str], int] = {}
        self.actions = Counter(
            "vti_failover_actions",
            "Actions the core asked for, by type",
            ["action"],
            registry=self.registry,
        )
        self.bgp_up = Gauge(
            "vti_failover_bgp_session_up",
            "1 while the BGP session over the tunnel is established",
            ["tunnel"],
            registry=self.registry,
        )
        self.bgp_changes = Counter(
            "vti_failover_bgp_session_changes",
            "BGP sessions lost (after being up) and restored, per tunnel",
            ["tunnel", "state"],
            registry=self.registry,
        )
        self.component_up = Gauge(
            "vti_failover_component_up",
            "0 while a component is lost (exabgp exited, charon's VICI or a netlink "
            "source unreachable), 1 once it is back",
            ["component"],
            registry=self.registry,
        )
        self.component_restarts = Counter(
            "vti_failover_component_restarts",
            "Times a component came back: exabgp restarted, a source reachable again",
            ["component"],
            registry=self.registry,
        )
        info = Gauge(
            "vti_failover_info",
            "Constant 1, labelled with the agent id",
            ["agent"],
            registry=self.registry,
        )
        info.labels(**labels).set(1)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def wants(self, action: Action) -> bool:
        del action
        return True

    async def run(self) -> None:
        self._listen()

    def _listen(self) -> None:
        try:
            self._server, self._thread = start_http_server(
                self.settings.port, addr=str(self.settings.listen), registry=self.registry
            )
        except OSError as exc:
            # No metrics is not a reason to stop failing over.
            log.error(
                "metrics: cannot listen on %s:%d: %s",
                self.settings.listen,
                self.settings.port,
                exc.strerror,
            )
            return
        log.info("metrics on http://%s:%d/metrics", self.settings.listen, self.settings.port)

    def reconfigure(self, settings: MetricsSettings) -> None:
        """A reload: listen where the new settings say; every series carries on."""
        moved = (settings.listen, settings.port) != (self.settings.listen, self.settings.port)
        self.settings = settings
        if not moved:
            return
        old, self._server = self._server, None
        self._listen()
        if old is not None:
            # shutdown() waits out the server's poll (0.5 s): not on the event loop.
            threading.Thread(target=_stop_server, args=(old,), daemon=True).start()

    @property
    def port(self) -> int:
        if self._server is None:
            raise AdapterError("metrics server is not listening")
        return int(self._server.server_port)

    async def apply(self, actions: Sequence[Action]) -> None:
        for action in actions:
            self.actions.labels(type(action).__name__).inc()
            if isinstance(action, PublishTunnelState):
                for state in Health:
                    self.health.labels(action.tunnel, state.value).set(
                        1 if action.health == state.value else 0
                    )
                self.carrying.labels(action.tunnel).set(1 if action.carrying else 0)
                self.announced.labels(action.tunnel).set(1 if action.announced else 0)
                if action.bgp is not None:
                    self.bgp_up.labels(action.tunnel).set(1 if action.bgp == "up" else 0)
                if action.metric is None:
                    with contextlib.suppress(KeyError):
                        self.metric.remove(action.tunnel)
                else:
                    self.metric.labels(action.tunnel).set(action.metric)
                self._quality(action)
                for reason, total in action.learned_rejected:
                    key = (action.tunnel, reason)
                    grown = total - self._rejected_seen.get(key, 0)
                    if grown > 0:
                        self.rejected.labels(*key).inc(grown)
                    self._rejected_seen[key] = total
            elif isinstance(action, PublishAlert):
                self.alerts.labels(action.kind).inc()
                if action.detected_after_s is not None:
                    self.detection.labels(action.kind).set(action.detected_after_s)
                self._count_change(action)

    def _quality(self, state: PublishTunnelState) -> None:
        """Loss ("lost/window") and RTT; absent while the tunnel has no probe numbers."""
        if state.loss:
            lost, window = (int(n) for n in state.loss.split("/"))
            self.probe_loss.labels(state.tunnel).set(lost / window)
        else:
            with contextlib.suppress(KeyError):
                self.probe_loss.remove(state.tunnel)
        if state.rtt_ms is not None:
            self.rtt.labels(state.tunnel).set(state.rtt_ms)
        else:
            with contextlib.suppress(KeyError):
                self.rtt.remove(state.tunnel)

    def _count_change(self, alert: PublishAlert) -> None:
        if alert.kind == "bgp-session-lost":
            self.bgp_changes.labels(alert.tunnel, "lost").inc()
        elif alert.kind == "bgp-session-restored":
            self.bgp_changes.labels(alert.tunnel, "restored").inc()
        elif alert.kind == "component-lost":
            self.component_up.labels(alert.component).set(0)
        elif alert.kind in ("component-restored", "component-restarted"):
            self.component_up.labels(alert.component).set(1)
            self.component_restarts.labels(alert.component).inc()

    async def close(self, cleanup: bool) -> None:
        del cleanup
        if self._server is not None:
            _stop_server(self._server)
            self._server = None


def _stop_server(server: WSGIServer) -> None:
    server.shutdown()
    server.server_close()
