# One image for both jobs: `visitcounter serve` (the default, what every app's
# pods run when their spec names no image) and `visitcounter operator` (the
# Helm chart's Deployment passes `operator` as its argument).

# Build stage: the toolchain the tests run on, the locked dependency set,
# release profile.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY benches ./benches
COPY src ./src
RUN cargo build --release --locked --bin visitcounter

# Final stage: glibc and CA roots, no shell, no package manager, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/visitcounter /usr/local/bin/visitcounter
# The same uid the StatefulSet's security context runs apps as.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/visitcounter"]
CMD ["serve"]
