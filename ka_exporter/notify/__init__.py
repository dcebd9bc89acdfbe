"""The alerting sidecar: keepalived's notify hook and FIFO, and the exporter's own events, to
SMTP, webhooks and Alertmanager through a durable spool."""
