# syntax=docker/dockerfile:1
# load-shed-api: one image for the roles api, upstream and all (LOAD_SHED__ROLE selects).
#   docker build -t load-shed-api:0.1.0 .
#   docker run --rm -p 8080:8080 -p 8081:8081 load-shed-api:0.1.0

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /build

# Dependencies first, in a layer that changes only with Cargo.toml / Cargo.lock.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# Then the sources (config/default.toml is compiled into the binary).
COPY config config
COPY src src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && strip target/release/load-shed-api

# Runtime: glibc and CA roots only, no shell, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /build/target/release/load-shed-api /load-shed-api
COPY config /config
WORKDIR /
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/load-shed-api"]
