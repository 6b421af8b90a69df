# The Switchyard image for users who build with Docker (the tests build the same
# image without Docker: scripts/k8s-cluster build → switchyard.local/switchyard:dev).
#   docker build -t switchyard.local/switchyard:dev .
# On EKS, tag and push it to your registry (ECR) and put that name in deploy/*.yaml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p switchyard

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
ENV SWITCHYARD_HOME=/var/lib/switchyard PYTHONUNBUFFERED=1
ENTRYPOINT ["/usr/local/bin/switchyard"]
