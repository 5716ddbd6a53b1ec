# kubelab: one image for every machine of the cluster (the role is the command).
# BASE_IMAGE defaults to the official Python image; where no registry is reachable, build
# kubelab/base:bookworm with scripts/build-base-image.sh and pass it (the README says how).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
# the programs the image catalog and the pod network use (already in kubelab/base)
RUN if ! command -v ip >/dev/null || ! command -v nginx >/dev/null; then \
      apt-get update -qq && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        iproute2 procps util-linux curl nginx-light redis-server busybox bind9-dnsutils \
        >/dev/null && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /opt/kubelab
# wheels from the host's docker/wheelhouse when present (no route out), else from PyPI
COPY docker/ /opt/kubelab/docker/
COPY pyproject.toml /opt/kubelab/
COPY proto /opt/kubelab/proto
COPY etcdlite /opt/kubelab/etcdlite
COPY apiserver /opt/kubelab/apiserver
COPY kubelab /opt/kubelab/kubelab
COPY controllers /opt/kubelab/controllers
COPY scheduler /opt/kubelab/scheduler
COPY nodeagent /opt/kubelab/nodeagent
COPY proxy /opt/kubelab/proxy
RUN python3 -m venv /opt/venv && \
    if ls docker/wheelhouse/*.whl >/dev/null 2>&1; then \
      /opt/venv/bin/pip install -q --no-index --find-links docker/wheelhouse \
        $(python3 -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml","rb"))["project"]["dependencies"]))'); \
    else \
      /opt/venv/bin/pip install -q \
        $(python3 -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml","rb"))["project"]["dependencies"]))'); \
    fi
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/opt/kubelab PYTHONUNBUFFERED=1
ENTRYPOINT ["python3", "-m", "kubelab.container"]
