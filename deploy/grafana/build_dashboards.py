"""Writes the Grafana dashboards (deploy/grafana/dashboards/*.json) from the panel lists below.

    python deploy/grafana/build_dashboards.py

The JSON files are committed; tests/deploy checks they match this script and evaluates every
panel's PromQL against a real Prometheus scraping a real `ffstream up`.
"""

from __future__ import annotations

import json
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "ffstream-prometheus"}
RATE = "$__rate_interval"


def _q(expr: str, legend: str = "") -> dict:
    return {"expr": expr, "legendFormat": legend}


def quantiles(metric: str, by: str = "") -> list[dict]:
    group = f"le, {by}" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [_q(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))", f"{prefix}p{int(q * 100)}")
            for q in (0.5, 0.99)]


SERVICE = ("ffstream: service", "ffstream-service", [
    ("Frames per second: accepted by the API, applied by wake", "short", [
        _q(f"sum(rate(ffstream_frames_accepted_total[{RATE}]))", "accepted"),
        _q(f"sum(rate(ffstream_wake_frames_applied_total[{RATE}]))", "applied"),
    ]),
    ("Request latency by route", "s", quantiles("ffstream_http_request_duration_seconds", "route")),
    ("Rejected ingest requests by reason", "reqps", [
        _q(f"sum by (reason) (rate(ffstream_ingest_requests_rejected_total[{RATE}]))", "{{reason}}"),
    ]),
    ("HTTP 5xx per second", "reqps", [
        _q(f'sum(rate(ffstream_http_request_duration_seconds_count{{status=~"5.."}}[{RATE}])) or vector(0)', "5xx"),
    ]),
    ("Queue lag (frames)", "short", [
        _q("ffstream_queue_lag_frames", "accepted, not applied"),
        _q("ffstream_queue_pending_frames", "delivered, not acknowledged"),
    ]),
    ("Queue wait vs compute per step", "s",
     [{**q, "legendFormat": "queue wait " + q["legendFormat"]} for q in quantiles("ffstream_queue_wait_seconds")]
     + [{**q, "legendFormat": "step compute " + q["legendFormat"]}
        for q in quantiles("ffstream_wake_update_duration_seconds")]),
    ("Ingest body size p50/p99", "bytes", quantiles("ffstream_ingest_body_bytes")),
    ("Active streams", "short", [_q("ffstream_wake_active_streams", "streams")]),
])

LEARNING = ("ffstream: learning", "ffstream-learning", [
    ("Goodness per layer on replayed frames (positive vs negative)", "short", [
        _q("ffstream_goodness", "{{phase}} layer {{layer}}"),
    ]),
    ("Goodness separation (positive - negative) per layer", "short", [
        _q("ffstream_goodness_separation", "layer {{layer}}"),
    ]),
    ("Online goodness of the positive steps per layer", "short", [
        _q("ffstream_online_goodness", "layer {{layer}}"),
    ]),
    ("Prequential accuracy (rolling, before learning each frame)", "percentunit", [
        _q("ffstream_prequential_accuracy", "accuracy"),
    ]),
    ("Frames per positive step p50/p99 (larger steps learn less per frame)", "short",
     quantiles("ffstream_positive_step_frames")),
    ("Wake/sleep round trip p50/p99 and the wake's time waiting at the cap", "s",
     [{**q, "legendFormat": "round trip " + q["legendFormat"]} for q in quantiles("ffstream_negative_round_trip_seconds")]
     + [{**q, "legendFormat": "sleep cycle " + q["legendFormat"]}
        for q in quantiles("ffstream_sleep_cycle_duration_seconds")]
     + [_q(f"rate(ffstream_wake_negative_wait_seconds_total[{RATE}])", "waiting (s per s)")]),
    ("Sleep cycles per minute and paused state", "short", [
        _q(f"sum(rate(ffstream_sleep_cycles_total[{RATE}])) * 60", "cycles / min"),
        _q("ffstream_sleep_paused", "paused"),
        _q("ffstream_sleep_worker_up", "sleep worker up"),
    ]),
    ("Negative updates per minute: applied and rejected", "short", [
        _q(f"sum(rate(ffstream_negative_updates_applied_total[{RATE}])) * 60", "applied"),
        _q(f"sum by (reason) (rate(ffstream_negative_updates_rejected_total[{RATE}])) * 60", "rejected {{reason}}"),
    ]),
    ("Weight norm per layer", "short", [_q("ffstream_weight_norm", "layer {{layer}}")]),
    ("Model version", "short", [_q("ffstream_model_version", "version")]),
    ("Snapshot and checkpoint age", "s", [
        _q("time() - ffstream_snapshot_timestamp_seconds", "snapshot"),
        _q("time() - ffstream_checkpoint_timestamp_seconds", "checkpoint"),
        _q("time() - ffstream_sleep_last_cycle_timestamp_seconds", "last sleep cycle"),
    ]),
    ("Checkpoint failures per minute (retried; frames stay unacknowledged until one succeeds)", "short", [
        _q(f"sum(rate(ffstream_checkpoint_failures_total[{RATE}])) * 60", "failures / min"),
    ]),
])

RESOURCES = ("ffstream: resources", "ffstream-resources", [
    ("CPU (cores) by role", "short", [_q(f"rate(ffstream_process_cpu_seconds_total[{RATE}])", "{{job}}")]),
    ("Resident memory by role", "bytes", [_q("ffstream_process_resident_memory_bytes", "{{job}}")]),
    ("GPU memory of the wake worker (0 on CPU)", "bytes", [
        _q("sum by (kind) (ffstream_gpu_memory_bytes) or vector(0)", "{{kind}}"),
    ]),
    ("Open file descriptors by role", "short", [_q("ffstream_process_open_fds", "{{job}}")]),
    ("Scrape health by role", "short", [_q('up{job=~"api|predict|wake|sleep"}', "{{job}}")]),
])


def dashboard(title: str, uid: str, panels: list) -> dict:
    out = []
    for i, (panel_title, unit, targets) in enumerate(panels):
        out.append({
            "id": i + 1, "type": "timeseries", "title": panel_title, "datasource": DATASOURCE,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [{"refId": chr(ord("A") + j), "datasource": DATASOURCE, **t} for j, t in enumerate(targets)],
        })
    return {"uid": uid, "title": title, "tags": ["ffstream"], "timezone": "browser", "schemaVersion": 39,
            "version": 1, "refresh": "5s", "time": {"from": "now-15m", "to": "now"}, "panels": out,
            "templating": {"list": []}, "annotations": {"list": []}, "editable": True}


def render() -> dict[str, str]:
    """{file name: JSON text} of every dashboard."""
    return {f"{uid.removeprefix('ffstream-')}.json": json.dumps(dashboard(title, uid, panels), indent=2) + "\n"
            for title, uid, panels in (SERVICE, LEARNING, RESOURCES)}


if __name__ == "__main__":
    folder = Path(__file__).parent / "dashboards"
    for name, text in render().items():
        (folder / name).write_text(text)
        print(f"wrote {folder / name}")
