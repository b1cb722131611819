#!/usr/bin/env bash
# Run the GPU check ON THE DEVICE MACHINE (no network, no Node). NOT RUN YET: written and
# checked on a CPU machine only (issue 17); the first session with a device runs it.
#
# Prepared here by bench/gpu/prepare-carry.sh. The device call (see bench/gpu/README.md):
#   carry:   [".gpu-carry", ".gl", "dist"]      (about 50 MB together with the tracked tree)
#   command: bash bench/gpu/run-on-device.sh
#   timeout_s: 420 or so, leaving room for one rerun inside the 15 minutes of device time
# Results land in $OUT (gpu-check.json, gpu-check.md, log.txt) and come back.
#
# Env: CHECK_ARGS (default "--sizes 224,480 --batch 16 --steps 3 --warmup 1"), and the data roots
# (COVIDCT_*) for the training run; without carried data (data/covid19-ct-seg-slices,
# data/luna16-slices, data/weights/densenet169-imagenet) the training run is skipped.
set -uo pipefail
OUT="${OUT:-$(mktemp -d)}"
cd "$(dirname "$0")/../.."
exec > >(tee "$OUT/log.txt") 2>&1
echo "== $(date -u +%FT%TZ) $(uname -m) $(nproc) cores"

# 1. The Vulkan loader (device README): unpack the carried .debs into /, then ldconfig.
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
ldconfig -p | grep -E 'libvulkan\.so\.1' || echo "libvulkan.so.1 still missing"
# The NVIDIA Vulkan driver manifest: the driver's own folder is mounted read-only.
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
export __EGL_VENDOR_LIBRARY_FILENAMES="${__EGL_VENDOR_LIBRARY_FILENAMES:-/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json}"
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

# 2. Node and node_modules from the carry.
mkdir -p /tmp/node/bin
xz -dc .gpu-carry/node.xz > /tmp/node/bin/node && chmod +x /tmp/node/bin/node
export PATH=/tmp/node/bin:$PATH
node --version || { echo "carried node does not run"; exit 10; }
rm -rf node_modules && tar -xJf .gpu-carry/node_modules.tar.xz || { echo "node_modules did not unpack"; exit 11; }

# 3. What loads, and why not.
node dist/lib/cli.js backend
COVIDCT_BACKEND=webgpu node dist/lib/cli.js backend --json > "$OUT/backend.json"; echo "forced webgpu: exit $?"

# 4. The check. Python with CUDA torch is the image's python3.
ARGS=(${CHECK_ARGS:---sizes 224,480 --batch 16 --steps 3 --warmup 1})
for d in data/covid19-ct-seg-slices data/luna16-slices data/weights/densenet169-imagenet; do
  [ -e "$d" ] || { echo "no $d carried: skipping the training run"; ARGS+=(--no-train); break; }
done
TORCH_PYTHON="${TORCH_PYTHON:-python3}" node dist/bench/gpu/check.js "${ARGS[@]}" --out "$OUT"
rc=$?
echo "== check exit $rc"
exit $rc
