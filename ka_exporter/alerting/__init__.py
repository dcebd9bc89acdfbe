"""Alert delivery: the alert, its durable spool, routing and damping, the worker and the sinks.

It knows nothing of VRRP or of where alerts come from (ka-notify's keepalived hook and FIFO,
the exporter's own events): those import it, never the other way.
"""
