# Builds engram-api, engram-worker and the engram client into one small image.
#   docker build -t engram .
#   docker run -p 8000:8000 -e ENGRAM_BIND=0.0.0.0:8000 -v engram-data:/data engram
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p api -p worker -p client --bin engram-api --bin engram-worker --bin engram

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /data --create-home engram
COPY --from=build /src/target/release/engram-api /src/target/release/engram-worker /src/target/release/engram /usr/local/bin/
USER engram
WORKDIR /data
ENV ENGRAM_DATA_DIR=/data ENGRAM_BIND=0.0.0.0:8000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD ["curl", "-fsS", "http://127.0.0.1:8000/ready"]
ENTRYPOINT ["engram-api"]
