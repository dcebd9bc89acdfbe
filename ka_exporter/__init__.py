"""ka-exporter: watches keepalived/VRRP clusters on the wire and exports what it sees."""


def __getattr__(name: str) -> str:
    """`__version__`, read on first use (see ka_exporter.version)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ka_exporter.version import installed  # noqa: PLC0415

    return installed()
