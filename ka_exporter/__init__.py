"""ka-exporter: watches keepalived/VRRP clusters on the wire and exports what it sees."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ka-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
