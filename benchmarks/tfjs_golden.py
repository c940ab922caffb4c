r"""Writes tests/golden/hse_faceres_tfjs.npz: HSE faceres run by TensorFlow.js itself.

The golden is made once, by hand, so that CI needs no node or npm:

  mkdir -p /tmp/tfjs_ref && (cd /tmp/tfjs_ref && npm init -y && npm install @tensorflow/tfjs@4)
  python -m benchmarks.tfjs_golden --node_modules=/tmp/tfjs_ref/node_modules

It runs benchmarks/tfjs_golden.js (pure-JS CPU backend) on seeded noise, NOT a
face photo: element i of the (BATCH, 224, 224, 3) graph input is
floor(256 * u_i) - 128, u_i the i-th draw of mulberry32(SEED), and stores the
graph's outputs with the seed. tests/test_tfjs_import.py regenerates the input
in numpy and compares the JAX import to them.
"""
import json
import os
import subprocess

from absl import app
from absl import flags
import numpy as np

from opom_jax import paths
from opom_jax.models.networks import hse_faceres

NODE_MODULES = flags.DEFINE_string("node_modules", "/tmp/tfjs_ref/node_modules",
                                   "node_modules folder holding @tensorflow/tfjs.")
SEED = flags.DEFINE_integer("seed", 20261203, "mulberry32 seed of the noise input.")
BATCH = flags.DEFINE_integer("batch", 2, "Noise images.")
OUTPUT = flags.DEFINE_string("output", str(paths.REPO_ROOT / "tests" / "golden" / "hse_faceres_tfjs.npz"),
                             "Golden .npz to write.")
OUTPUTS = ("global_pooling/Mean", "age_pred/Softmax", "gender_pred/Sigmoid")


def main(argv):
  del argv
  model_json = paths.model_file(hse_faceres.FILE)
  script = paths.REPO_ROOT / "benchmarks" / "tfjs_golden.js"
  env = dict(os.environ, NODE_PATH=NODE_MODULES.value)
  out = subprocess.run(["node", str(script), str(model_json), str(SEED.value), str(BATCH.value),
                        ",".join(OUTPUTS)], env=env, check=True, capture_output=True, text=True)
  result = json.loads(out.stdout)
  arrays = {name: np.asarray(v["data"], np.float32).reshape(v["shape"])
            for name, v in result["outputs"].items()}
  np.savez_compressed(OUTPUT.value, seed=np.int64(SEED.value), batch=np.int64(BATCH.value),
                      tfjs_version=np.str_(result["tfjs_version"]),
                      **{name.replace("/", "__"): v for name, v in arrays.items()})
  print(f"{OUTPUT.value}: TF.js {result['tfjs_version']} ({result['backend']}), "
        + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
  app.run(main)
