# arrakis-router: a small image running `router serve` (see README "Deploying").
#
#   make image                      # builds the base (debootstrap) and this image
#   docker run --read-only --cap-drop ALL -p 31206:31206 \
#     -v $PWD/maps:/etc/arrakis-router/maps:ro arrakis-router
#
# The scope map is read from /etc/arrakis-router/maps/scope-map.yaml: mount a DIRECTORY there
# (a single-file bind mount keeps the old inode when an editor or a ConfigMap update replaces
# the file, so reloads would read a stale map). It is re-read when it changes and on SIGHUP.
# Settings come from ARRAKIS_ROUTER_<OPTION> variables (or flags after the image name, or a
# TOML file named by ARRAKIS_ROUTER_CONFIG); the HEALTHCHECK reads the same variables, so
# it follows the configured port. SIGTERM drains: ARRAKIS_ROUTER_DRAIN_TIMEOUT is 7 s here, so
# the router exits (within drain timeout + 2 s) before `docker stop`'s default 10 s SIGKILL;
# raise both together (docker stop -t / docker run --stop-timeout).
#
# No container registry is needed: BASE_IMAGE is built from Debian packages by
# deploy/docker/base-image.sh (debootstrap bookworm minbase + python3 3.11 + python3-venv).
# Python packages are installed offline from the wheels `make image` collects into
# build/image-wheels, pinned by constraints.txt (the file `make venv` uses too). What the
# router never loads is left out: headers, tests, Cython sources, pyarrow's S3 filesystem,
# and the compiler of the build stage.

# Any image with python3.11 and python3-venv at /usr/bin works; with a registry, pin it by
# digest (--build-arg BASE_IMAGE=registry/image@sha256:...). The local base has no registry
# digest: deploy/docker/base-image.sh pins its content to the Debian bookworm archive.
ARG BASE_IMAGE=arrakis-router-base:bookworm

FROM ${BASE_IMAGE} AS build
# The native output stage (router/_chunkstream, hatch_build.py) is compiled here, so the
# build stage needs a C++ compiler and the Python headers; the final stage does not.
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        g++ python3-dev >/dev/null \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY build/image-wheels/ /deps/
COPY constraints.txt ./
# Everything the wheel is built from (tests/test_dockerfile.py keeps this list honest).
COPY pyproject.toml README.md LICENSE hatch_build.py ./
COPY schemas/ schemas/
COPY scopemap/ scopemap/
COPY router/ router/
# PIP_CONSTRAINT pins the wheel's isolated build environment too: the native stage is
# compiled against the same pyarrow the image runs
RUN python3 -m venv /opt/router \
    && PIP_CONSTRAINT=/src/constraints.txt /opt/router/bin/pip wheel --no-index \
        --find-links /deps -c constraints.txt --no-deps --wheel-dir /wheels . \
    && /opt/router/bin/pip install --no-index --find-links /deps -c constraints.txt \
        --no-compile /wheels/arrakis_router-*.whl \
    && /opt/router/bin/pip uninstall --yes pip setuptools \
    && cd /opt/router/lib/python3.11/site-packages \
    && rm -rf pyarrow/include pyarrow/src pyarrow/tests numpy/*/tests numpy/tests \
        numpy/_core/include numpy/f2py pyarrow/*.pxd pyarrow/*.pyx pyarrow/includes \
        pyarrow/libarrow_s3.so* pyarrow/_s3fs.*.so \
    && /opt/router/bin/python -c "import pyarrow.flight, pyarrow.fs, numpy, router.serve" \
    && /opt/router/bin/python -m router.outstream \
    && /opt/router/bin/python -m compileall -q -j 0 /opt/router/lib

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="arrakis-router" \
      org.opencontainers.image.description="One Arrow Flight address in front of many Arrakis data servers" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/arrakis-router/arrakis-router" \
      org.opencontainers.image.base.name="arrakis-router-base:bookworm (debootstrap)"
COPY --from=build /opt/router /opt/router
# gperftools' tcmalloc serves the router's malloc (LD_PRELOAD below): gRPC allocates from
# dozens of serving threads at once, which per-thread caches serve with 8-21 % less CPU per
# GB than glibc's arenas (docs/guide/deployment.md, "Memory allocator"). A bare file name:
# the loader finds it in the architecture's library directory. router_started logs it.
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        libtcmalloc-minimal4 >/dev/null \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
    && mkdir -p /etc/arrakis-router/maps
ENV PATH=/opt/router/bin:$PATH \
    LD_PRELOAD=libtcmalloc_minimal.so.4 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ARRAKIS_ROUTER_SCOPE_MAP=/etc/arrakis-router/maps/scope-map.yaml \
    ARRAKIS_ROUTER_URL=grpc://0.0.0.0:31206 \
    ARRAKIS_ROUTER_LOG_FORMAT=json \
    ARRAKIS_ROUTER_DRAIN_TIMEOUT=7
# numeric: Kubernetes' runAsNonRoot can verify it (no passwd entry needed)
USER 10001:10001
EXPOSE 31206
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=6s --start-period=10s --retries=3 \
    CMD ["router", "health", "--timeout", "5"]
ENTRYPOINT ["router", "serve"]
CMD []
