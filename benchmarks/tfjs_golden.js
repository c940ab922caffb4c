// Runs a TF.js graph model with TensorFlow.js itself (pure-JS CPU backend) on
// seeded noise and prints its outputs as JSON: the reference that
// tests/golden/hse_faceres_tfjs.npz holds. Driven by benchmarks/tfjs_golden.py,
// which documents the setup; by hand:
//   NODE_PATH=<folder>/node_modules node benchmarks/tfjs_golden.js MODEL_JSON SEED BATCH OUT1,OUT2,...
//
// Input: batch x 224 x 224 x 3, element i = floor(256 * u_i) - 128 with u_i the
// i-th draw of mulberry32(SEED); the test regenerates it in numpy.
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

function mulberry32(a) {
  return function () {
    a = (a + 0x6D2B79F5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function main() {
  const [modelJson, seedArg, batchArg, outputsArg] = process.argv.slice(2);
  const seed = parseInt(seedArg, 10), batch = parseInt(batchArg, 10);
  const outputs = outputsArg.split(',');
  await tf.setBackend('cpu');
  const spec = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
  const shards = spec.weightsManifest.flatMap(g => g.paths).map(
      p => fs.readFileSync(path.join(path.dirname(modelJson), p)));
  const weightData = new Uint8Array(Buffer.concat(shards)).buffer;
  const model = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: spec.modelTopology, format: spec.format,
    weightSpecs: spec.weightsManifest.flatMap(g => g.weights), weightData,
  }));
  const rand = mulberry32(seed);
  const n = batch * 224 * 224 * 3;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.floor(256 * rand()) - 128;
  const input = tf.tensor4d(x, [batch, 224, 224, 3]);
  const ys = model.execute(input, outputs);
  const result = {tfjs_version: tf.version.tfjs, backend: tf.getBackend(), seed, batch, outputs: {}};
  for (let k = 0; k < outputs.length; k++) {
    result.outputs[outputs[k]] = {shape: ys[k].shape, data: Array.from(await ys[k].data())};
  }
  process.stdout.write(JSON.stringify(result));
}

main().catch(e => { console.error(e); process.exit(1); });
