# stopcald in a container: build with CUDA (nvcc + cuBLAS) in the devel image, run in the runtime image.
#   docker build -t stopcal:0.1.0 .
#   docker run --gpus all -p 8080:8080 stopcal:0.1.0            # --device auto: CUDA when visible
#   apptainer pull stopcal.sif docker://REGISTRY/stopcal:0.1.0  # HPC (see deploy/slurm/README.md)
# Ubuntu 24.04 images: the build needs CMake >= 3.25 (22.04 ships 3.22).
ARG CUDA_VERSION=12.6.3
ARG CUDA_ARCHS="80;90;90a"

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04 AS build
ARG CUDA_ARCHS
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
      libopenblas-openmp-dev libjansson-dev libcfitsio-dev libmicrohttpd-dev libcurl4-openssl-dev zlib1g-dev libpng-dev \
      libgrpc-dev libprotobuf-c-dev protobuf-c-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Only the shipped programs are built (the test suite's references need PyTorch, not wanted here).
# The client CLI `stopcal` is copied too once client/ builds one.
# The gRPC service (--grpc-port) is optional in CMake; the image always has it, so a missing package
# fails the build here (stopcald not linked against gRPC) rather than shipping an image without it.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS}" \
 && cmake --build /build -j "$(nproc)" --target stopcald stopcal-infer \
 && (cmake --build /build -j "$(nproc)" --target stopcal 2>/dev/null || true) \
 && ldd /build/server/stopcald | grep -q libgrpc \
 && mkdir -p /out/bin /out/models \
 && cp /build/server/stopcald /build/server/stopcal-infer /out/bin/ \
 && if [ -x /build/client/stopcal ]; then cp /build/client/stopcal /out/bin/; fi \
 && cp models/demo/stopcal-demo.safetensors models/demo/MODEL_CARD.md /out/models/

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive
# Runtime libraries of the build stage's -dev packages (Ubuntu 24.04 names; libcurl for the client).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0-openmp libjansson4 libcfitsio10t64 \
      libmicrohttpd12t64 libcurl4t64 libgomp1 zlib1g libpng16-16t64 libgrpc29t64 libprotobuf-c1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin stopcal
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /out/models/ /opt/stopcal/models/
LABEL org.opencontainers.image.title="stopcal" \
      org.opencontainers.image.description="stopcald: LOFAR self-calibration stop/continue classifier service" \
      org.opencontainers.image.version="0.1.0"
# Every flag has a STOPCAL_* twin; the compiled-in default model path is the build tree's, so
# name the model shipped in the image. Override STOPCAL_MODEL (comma list) to serve others.
ENV STOPCAL_MODEL=/opt/stopcal/models/stopcal-demo.safetensors \
    STOPCAL_HOST=0.0.0.0 \
    STOPCAL_PORT=8080 \
    STOPCAL_DEVICE=auto
USER 10001:10001
EXPOSE 8080
# stopcald --healthcheck probes /v2/health/ready on 127.0.0.1:$STOPCAL_PORT, so the image needs no
# curl. Docker-only: Kubernetes uses its own probes and Apptainer ignores HEALTHCHECK.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/stopcald", "--healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/stopcald"]
CMD []
