# Demo downstream: the router image plus the deterministic mock server (router_backends).
# Built from the repository root by compose.yaml; not for production.
ARG ROUTER_IMAGE=arrakis-router:dev
FROM ${ROUTER_IMAGE}
COPY backends/router_backends/ /opt/backends/router_backends/
COPY deploy/compose/channels.toml /etc/arrakis-demo/channels.toml
ENV PYTHONPATH=/opt/backends
ENTRYPOINT ["python", "-m", "router_backends"]
CMD ["mock", "--url", "grpc://0.0.0.0:31206", "/etc/arrakis-demo/channels.toml"]
