/**
 * A stand-in for the `webgpu` package (Dawn for Node) for the backend tests, loaded through
 * COVIDCT_WEBGPU_MODULE. It offers one adapter whose requestDevice() always fails, so the tests can
 * drive initBackend's WebGPU path past the adapter request, through the registration of
 * tfjs-backend-webgpu, into a failed initialisation, and check that the engine is clean afterwards.
 * FAKE_DAWN=no-adapter makes it find no adapter instead (and say why on stderr, as Dawn does).
 */
export const globals = {
  GPUBufferUsage: { MAP_READ: 1, MAP_WRITE: 2, COPY_SRC: 4, COPY_DST: 8, INDEX: 16, VERTEX: 32, UNIFORM: 64, STORAGE: 128, INDIRECT: 256, QUERY_RESOLVE: 512 },
  GPUMapMode: { READ: 1, WRITE: 2 },
  GPUShaderStage: { VERTEX: 1, FRAGMENT: 2, COMPUTE: 4 },
};

export function create(_flags: string[]) {
  return {
    async requestAdapter() {
      if (process.env.FAKE_DAWN === "no-adapter") {
        process.stderr.write("Warning: Couldn't load Vulkan: fake loader missing\n    at operator() (fake.cpp:1)\n");
        return null;
      }
      return {
        info: { vendor: "fake-vendor", architecture: "fake-arch", device: "", description: "Fake adapter for tests" },
        isFallbackAdapter: false,
        features: new Set<string>(),
        limits: { maxBufferSize: 1 << 28, maxStorageBufferBindingSize: 1 << 27, maxComputeWorkgroupStorageSize: 16384, maxComputeWorkgroupsPerDimension: 65535, maxComputeWorkgroupSizeX: 256, maxComputeInvocationsPerWorkgroup: 256 },
        async requestDevice() {
          throw new Error("fake adapter: requestDevice refused");
        },
      };
    },
  };
}
