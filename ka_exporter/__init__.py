"""ka-exporter: watches keepalived/VRRP clusters on the wire and exports what it sees."""


def __getattr__(name: str) -> str:
    """`__version__` on first use: importlib.metadata costs ~40 ms of startup, and the notify
    hook, which keepalived waits for, never needs it."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("ka-exporter")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"
