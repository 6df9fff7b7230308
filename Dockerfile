# syntax=docker/dockerfile:1
#
# One image, one binary (`agent-operator`), several entrypoints chosen by the first argument:
#   controller  (Deployment, runs as uid 65532, the image's default user)
#   sidecar     (DaemonSet, overrides runAsUser 0: see docs/install.md)
#
# Build: docker build -t ghcr.io/agent-operator/agent-operator:v0.1.0 .
# test/unit/dockerfile.test.ts checks this file's structure and build context;
# test/integration/dockerfile.test.ts checks that the built CLI runs with production dependencies only.

ARG NODE_IMAGE=node:24-slim

# ---- build: dev dependencies + TypeScript compile ------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: package.json's `prepare` script builds, and the sources are not copied yet
# (copying them after `npm ci` keeps the dependency layer cached across source changes).
RUN npm ci --ignore-scripts
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies and the compiled CLI only ---------------------------
FROM ${NODE_IMAGE} AS runtime
# tmux runs the agents' sessions; tini is PID 1 (forwards SIGTERM to node and reaps the
# processes the detached tmux server and the agents leave behind); procps gives ps/pkill to
# whoever debugs a node; ca-certificates for TLS to the API server and the agents' own APIs;
# bubblewrap (with util-linux's setpriv and setsid) builds every agent's sandbox.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tmux tini procps ca-certificates bubblewrap \
 && rm -rf /var/lib/apt/lists/*
# The controller's identity. 65532 is the conventional "nonroot" uid (distroless), matched by
# runAsUser in deploy/base/controller/deployment.yaml.
RUN groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --home-dir /home/nonroot --create-home --shell /usr/sbin/nologin nonroot
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=dev: the runtime gets production dependencies only. --ignore-scripts: `prepare` would
# run `tsc`, which is a dev dependency and is absent here (the build stage already compiled).
RUN npm ci --omit=dev --ignore-scripts \
 && npm cache clean --force
COPY --from=build /src/dist/src ./dist/src
# The generated CRDs travel with the binary, as in the npm package.
COPY crds ./crds
ENV NODE_ENV=production
USER 65532:65532
ENTRYPOINT ["tini", "--", "node", "/app/dist/src/cli.js"]
CMD ["--help"]
