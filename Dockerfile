# The cnpg-rs operator image: the operator, the kubectl-cnpg plugin, and the instance
# manager that every instance pod copies out of it (its `bootstrap-controller` init
# container runs `cnpg-instance install`), so any PostgreSQL image can run an instance.
#
# Not built or tested on our machines (they have no container engine). Build with
#   docker build -t ghcr.io/cnpg-rs/cnpg-operator:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cnpg-operator -p cnpg-instance

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/cnpg-operator /usr/local/bin/cnpg-operator
COPY --from=build /src/target/release/kubectl-cnpg /usr/local/bin/kubectl-cnpg
COPY --from=build /src/target/release/cnpg-instance /usr/local/bin/cnpg-instance
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/cnpg-operator"]
