/**
 * Inference graphs with BatchNormalization folded into the convolution before it.
 *
 * At inference a BN layer is a per-channel affine map, y = γ·(x − μ)/√(σ² + ε) + β. When x is a
 * convolution's output and nothing else reads it, the map folds into that convolution's kernel and
 * bias, W' = W·s, b' = (b − μ)·s + β with s = γ/√(σ² + ε), and the BN layer leaves the graph. The
 * residual U-Net has two such BN layers in each unit (after its first conv and on the projection
 * shortcut); the pre-activation BN after an add or a concat stays. On wasm BN costs about as much
 * as the convolutions (bench/fold-bn.ts), so the segmenters serve masks from the folded graph.
 * Outputs agree with the unfolded model to float rounding (test/fold.test.ts).
 */
import * as tf from "@tensorflow/tfjs";

type InboundNode = [string, number, number, Record<string, unknown>?];
interface LayerJson { name: string; class_name: string; config: Record<string, unknown>; inbound_nodes: InboundNode[][] }
interface ModelJson { class_name: string; config: { name: string; layers: LayerJson[]; input_layers: unknown[]; output_layers: [string, number, number][] } }

/** conv name → BN name, for every BN whose only input is a Conv2D read by nothing else (and used once). */
function foldablePairs(topology: ModelJson): Map<string, string> {
  const layers = topology.config.layers;
  const byName = new Map(layers.map((l) => [l.name, l]));
  const consumers = new Map<string, number>();
  for (const l of layers) for (const node of l.inbound_nodes) for (const [src] of node) consumers.set(src, (consumers.get(src) ?? 0) + 1);
  for (const [name] of topology.config.output_layers) consumers.set(name, (consumers.get(name) ?? 0) + 1);
  const pairs = new Map<string, string>();
  for (const bn of layers) {
    if (bn.class_name !== "BatchNormalization" || bn.inbound_nodes.length !== 1 || bn.inbound_nodes[0].length !== 1) continue;
    const axis = bn.config.axis;
    if (!(axis === -1 || axis === 3 || (Array.isArray(axis) && axis.length === 1 && (axis[0] === -1 || axis[0] === 3)))) continue;
    const src = byName.get(bn.inbound_nodes[0][0][0]);
    if (!src || src.class_name !== "Conv2D" || src.inbound_nodes.length !== 1 || consumers.get(src.name) !== 1) continue;
    if (src.config.activation !== "linear" || src.config.data_format === "channels_first") continue;
    pairs.set(src.name, bn.name);
  }
  return pairs;
}

/**
 * A new model computing what `model` computes in inference mode, with every foldable
 * Conv2D → BatchNormalization pair merged into one Conv2D (with bias). The input model is left as it
 * was (the caller still owns and disposes it). A model with nothing to fold comes back as a copy.
 */
export async function foldBatchNorm(model: tf.LayersModel): Promise<tf.LayersModel> {
  const topology = JSON.parse(JSON.stringify(model.toJSON(undefined, false))) as ModelJson;
  const pairs = foldablePairs(topology);
  const bnOf = new Map(pairs);
  const folded = new Set(pairs.values());
  const replacement = new Map([...pairs].map(([conv, bn]) => [bn, conv]));
  topology.config.layers = topology.config.layers
    .filter((l) => !folded.has(l.name))
    .map((l) => {
      const config = bnOf.has(l.name) ? { ...l.config, use_bias: true } : l.config;
      const inbound_nodes = l.inbound_nodes.map((node) => node.map(([src, ...rest]) => [replacement.get(src) ?? src, ...rest] as InboundNode));
      return { ...l, config, inbound_nodes };
    });
  topology.config.output_layers = topology.config.output_layers.map(([src, ...rest]) => [replacement.get(src) ?? src, ...rest]);
  const out = await tf.models.modelFromJSON({ modelTopology: topology as unknown as tf.io.ModelJSON["modelTopology"] });
  for (const layer of out.layers) {
    const source = model.getLayer(layer.name);
    const bnName = bnOf.get(layer.name);
    if (!bnName) {
      layer.setWeights(source.getWeights());
      continue;
    }
    const bn = model.getLayer(bnName);
    const eps = (bn.getConfig().epsilon as number) ?? 1e-3;
    const weights = tf.tidy(() => {
      const [kernel, bias] = source.getWeights();
      const filters = kernel.shape[3] as number;
      // BN weights in Keras order: gamma and beta only when scale/center are on, then moving mean and variance.
      const bw = bn.getWeights();
      const cfg = bn.getConfig();
      let k = 0;
      const gamma = cfg.scale === false ? tf.ones([filters]) : bw[k++];
      const beta = cfg.center === false ? tf.zeros([filters]) : bw[k++];
      const mean = bw[k++], variance = bw[k++];
      const s = tf.div(gamma, tf.sqrt(tf.add(variance, eps)));
      const b0 = bias ?? tf.zeros([filters]);
      return [tf.mul(kernel, s), tf.add(tf.mul(tf.sub(b0, mean), s), beta)];
    });
    layer.setWeights(weights);
    weights.forEach((w) => w.dispose());
  }
  return out;
}
