# syntax=docker/dockerfile:1
# ka-exporter container image. Run it on the host network with CAP_NET_RAW only:
#   docker run --network host --cap-drop ALL --cap-add NET_RAW --read-only ka-exporter:0.1.0

FROM python:3.11-slim AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ka_exporter ./ka_exporter
RUN pip wheel --no-cache-dir --no-deps . -w /wheels

FROM python:3.11-slim
ARG VERSION=0.1.0
ARG SOURCE=""
LABEL org.opencontainers.image.title="ka-exporter" \
      org.opencontainers.image.description="Prometheus exporter that watches keepalived/VRRP clusters on the wire: masters, failovers, split-brain." \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# Only the wheel and its dependencies go into the image; no build tools, no sources.
# A non-root process loses added capabilities at exec (Docker and Kubernetes set no ambient
# capabilities), so the venv's own copy of the interpreter carries cap_net_raw=ep. It takes
# effect only within what the container is given (--cap-add NET_RAW), also under
# no-new-privileges. Set-uid bits are stripped: that file capability is the only privilege here.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv --copies /opt/ka-exporter \
    && /opt/ka-exporter/bin/pip install --no-cache-dir /wheels/*.whl \
    && find / -xdev -type f -perm /6000 -exec chmod a-s {} + \
    && python -c 'import os, struct; exe = open("/opt/ka-exporter/bin/ka-exporter").readline()[2:].strip(); os.setxattr(exe, "security.capability", struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0))'
# Bytecode is compiled at install time; a read-only root filesystem needs no more.
ENV PATH="/opt/ka-exporter/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65534:65534
EXPOSE 9743
# The slim image has no curl; the system Python (no capability) probes with urllib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9743/-/healthy', timeout=4)"]
ENTRYPOINT ["ka-exporter"]
