# Build the release binary in the Swift image, run it as a non-root user on Debian.
FROM swift:6.3-bookworm AS build
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        pkg-config liblua5.4-dev libssl-dev zlib1g-dev libhiredis-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
RUN swift build -c release --product wsgate --static-swift-stdlib \
    && cp "$(swift build -c release --show-bin-path)/wsgate" /usr/local/bin/wsgate

FROM debian:bookworm-slim
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        liblua5.4-0 libssl3 zlib1g libhiredis0.14 ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /app --shell /usr/sbin/nologin wsgate
WORKDIR /app
COPY --from=build /usr/local/bin/wsgate /usr/local/bin/wsgate
COPY config ./config
COPY Endpoints ./Endpoints
USER wsgate
EXPOSE 8080
# A real WebSocket on the health route: the server answers "OK" whatever the endpoint scripts are.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/wsgate", "probe", "ws://127.0.0.1:8080/api/v1/solution/health", "--timeout", "2"]
ENTRYPOINT ["/usr/local/bin/wsgate"]
CMD ["--config", "config/wsgate.json"]
