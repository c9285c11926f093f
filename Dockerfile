# arrakis-router: slim image running `router serve`.
#
#   docker build -t arrakis-router .
#   docker run -p 31206:31206 -v $PWD/my-map.yaml:/etc/arrakis-router/scope-map.yaml:ro arrakis-router
#
# The scope map is read from /etc/arrakis-router/scope-map.yaml (mount yours there) and
# re-read on SIGHUP (`docker kill -s HUP <container>`). Extra flags go after the image name
# and replace CMD, e.g. `... arrakis-router --scope-map /etc/arrakis-router/scope-map.yaml
# --mode redirect`.

FROM python:3.11-slim AS build
WORKDIR /src
# Everything the wheel is built from (tests/test_dockerfile.py keeps this list honest).
COPY pyproject.toml README.md LICENSE ./
COPY schemas/ schemas/
COPY scopemap/ scopemap/
COPY router/ router/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home router \
    && mkdir -p /etc/arrakis-router
USER router
EXPOSE 31206 9106
HEALTHCHECK --interval=30s --timeout=10s --start-period=15s --retries=3 \
    CMD ["router", "health", "grpc://127.0.0.1:31206", "--timeout", "5"]
ENTRYPOINT ["router", "serve"]
CMD ["--scope-map", "/etc/arrakis-router/scope-map.yaml", "--url", "grpc://0.0.0.0:31206", "--log-format", "json"]
