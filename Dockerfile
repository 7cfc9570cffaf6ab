# syntax=docker/dockerfile:1
# One image for every llmmesh service; the command picks the service:
#   llmmesh router | llmmesh provider mock|openai|anthropic|google | llmmesh agent-server
# Runtime dependencies come from requirements.lock (the dev extra is left out),
# so the image runs exactly the versions the tests ran.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.8
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}" \
 && python -m venv /opt/llmmesh
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml requirements.lock ./
RUN uv pip install --no-cache --python /opt/llmmesh/bin/python --constraint requirements.lock --requirement pyproject.toml
COPY README.md ./
COPY gen ./gen
COPY services ./services
# Not editable: the code and its packaged YAML defaults land in site-packages,
# compiled to bytecode now because the root filesystem is read-only at run time.
RUN uv pip install --no-cache --python /opt/llmmesh/bin/python --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 llmmesh \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin llmmesh
COPY --from=build /opt/llmmesh /opt/llmmesh
# /tmp is the only writable path (an emptyDir in Kubernetes); HOME points there
# because SDKs and libraries may cache under it.
ENV PATH=/opt/llmmesh/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LLMMESH_HOST=0.0.0.0 \
    LLMMESH_PORT=50051 \
    LLMMESH_LOG_FORMAT=json
USER 10001:10001
EXPOSE 50051
ENTRYPOINT ["llmmesh"]
CMD ["router"]
