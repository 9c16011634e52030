# The image every squeezeflow Kubeflow component runs in (squeezeflow.kfp.IMAGE):
#   docker build -t ghcr.io/squeezeflow/squeezeflow:0.1.0 .
# CPU-only torch from the PyTorch CPU index, the same pin as the Makefile's TORCH_PIN; squeezeflow with
# its kfp extra, and the server extra (PostgreSQL driver) so the chart's MLflow server runs from it too. Runs as an unprivileged user; state goes under $HOME (SQUEEZEFLOW_HOME).

# --- build: a virtual environment with everything installed ------------------------------------------
FROM python:3.11.13-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/squeezeflow
ENV PATH=/opt/squeezeflow/bin:$PATH

WORKDIR /src
# torch first, from the CPU index (no CUDA libraries in the image), then the package against that pin.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY components ./components
# DL3013: this installs the checked-out package itself (its dependencies' ranges are in pyproject.toml).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[kfp,server]" torch==2.13.0 \
    && python -c "import squeezeflow.kfp.components, torch; assert '+cpu' in torch.__version__, torch.__version__"

# --- runtime: the environment and nothing else ----------------------------------------------------
FROM python:3.11.13-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="squeezeflow" \
      org.opencontainers.image.description="Automated model compression with an accuracy gate (Kubeflow components)" \
      org.opencontainers.image.source="https://github.com/squeezeflow/squeezeflow" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 squeezeflow \
    && useradd --system --uid 10001 --gid squeezeflow --create-home --home-dir /home/squeezeflow squeezeflow

COPY --from=build /opt/squeezeflow /opt/squeezeflow

ENV PATH=/opt/squeezeflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/squeezeflow \
    SQUEEZEFLOW_HOME=/home/squeezeflow/.squeezeflow \
    MPLCONFIGDIR=/tmp/matplotlib

USER 10001:10001
WORKDIR /home/squeezeflow

CMD ["squeezeflow", "--help"]
