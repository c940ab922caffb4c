"""Frame-level identification before and after protecting video, and throughput.

Two measurements, aggregate numbers only (the emmov participants are ordinary
people: no face of theirs is saved):

* emmov (`emmov_identification`): 7 people x 240 consecutive aligned frames.
  Each person's mask is learned from 10 frames (every 24th), the other 230 are
  protected in the crop (mask added, uint8 truncation) and identified with the
  reference protocol (metrics.protection): protected frame i vs clean frame
  j != i of the same person, distractors the other people's clean frames and
  single-photo LFW people. Consecutive frames are near duplicates, so the
  clean gallery holds near copies of every probe: identification is as easy
  as it gets, and protection here is a lower bound.
* Hamilton clip (`clip_identification`): the mask learned from the reference
  still plus a few frames, the whole clip protected end to end (tracking,
  blending, H.264), then every frame's face re-detected and re-aligned in the
  clean video, in the protected frames before encoding and in the protected
  video, and ranked against the clean still among the LFW distractors.
"""
from __future__ import annotations

import collections
import dataclasses
import pathlib
import tempfile

import numpy as np

from opom_jax.attack.config import AttackConfig
from opom_jax.data import align
from opom_jax.data import face_track
from opom_jax.data import splits
from opom_jax.eval import metrics
from opom_jax.run import mask_file
from opom_jax.run import photo_io
from opom_jax.run import video
from opom_jax.run import video_io
from opom_jax.run.learn import learn_masks
from opom_jax.run.log import progress_log

EMMOV_TRAIN_STRIDE = 24   # frames 0, 24, ..., 216: 10 training frames of 240
CLIP_TRAIN_FRAMES = 5     # frames of the clip, beside the still, the mask learns from
KS = (1, 5)


@dataclasses.dataclass(frozen=True)
class Embedder:
  name: str
  embed: object   # (N, 112, 112, 3) uint8 -> (N, d) L2-normalised


def lfw_distractors(lfw_root: pathlib.Path, count: int) -> np.ndarray:
  """Aligned crops of the first `count` LFW people with one photo (sorted by name)."""
  photos = splits.list_identities(lfw_root).photos
  crops = []
  for person in sorted(p for p, files in photos.items() if len(files) == 1):
    try:
      crops.append(align.align_file(lfw_root / person / photos[person][0]).crop)
    except align.AlignError:
      continue
    if len(crops) == count:
      break
  return np.stack(crops)


def _read_person(folder: pathlib.Path) -> np.ndarray:
  return np.stack([align.read_rgb(p) for p in sorted(folder.iterdir()) if not p.name.startswith(".")])


def emmov_identification(root: pathlib.Path, surrogate, embedders: list[Embedder],
                         distractors: np.ndarray, attack: AttackConfig, seed: int = 0,
                         log=progress_log) -> list[dict]:
  """Rows {model, condition, protection@k, identified@k, frames, pairs} pooled over people."""
  people = sorted(p for p in root.iterdir() if p.is_dir())
  frames = np.stack([_read_person(p) for p in people])          # (P, N, 112, 112, 3)
  train_idx = np.arange(0, frames.shape[1], EMMOV_TRAIN_STRIDE)
  test_idx = np.setdiff1d(np.arange(frames.shape[1]), train_idx)
  log(f"emmov: {len(people)} people, {len(train_idx)} training and {len(test_idx)} test frames each")
  train = frames[:, train_idx].astype(np.float32)
  masks = learn_masks([surrogate.apply], (surrogate.params,), train,
                      np.ones(train.shape[:2], bool), attack, seed=seed, people_per_batch=len(people),
                      log=log)
  clean = frames[:, test_idx]
  protected = np.clip(clean.astype(np.float32) + np.asarray(masks)[:, None], 0, 255).astype(np.uint8)
  rows = []
  for model in embedders:
    shape = clean.shape[:2]
    clean_f = model.embed(clean.reshape(-1, *clean.shape[2:])).reshape(*shape, -1)
    prot_f = model.embed(protected.reshape(-1, *clean.shape[2:])).reshape(*shape, -1)
    lfw_f = model.embed(distractors)
    for condition, probes in (("clean", clean_f), ("protected", prot_f)):
      misses, pairs = {k: 0.0 for k in KS}, 0
      for p in range(len(people)):
        others = np.concatenate([clean_f[:p].reshape(-1, clean_f.shape[-1]),
                                 clean_f[p + 1:].reshape(-1, clean_f.shape[-1]), lfw_f])
        result = metrics.protection(probes[p], clean_f[p], np.zeros(len(test_idx), int), others,
                                    ks=KS)
        pairs += result.pairs
        for k in KS:
          misses[k] += result.pooled[k] * result.pairs
      rows.append({"model": model.name, "condition": condition, "pairs": pairs,
                   **{f"protection@{k}": misses[k] / pairs for k in KS}})
    log(f"emmov: {model.name} done")
  return rows


def _faces(frames) -> dict[int, np.ndarray]:
  """{frame index: aligned crop of the largest face}, frames without a face left out."""
  crops = {}
  for i, frame in enumerate(frames):
    try:
      crops[i] = align.align_image(frame).crop
    except align.AlignError:
      pass
  return crops


def clip_identification(clip: pathlib.Path, still: pathlib.Path, surrogate_cfg: video.VideoConfig,
                        embedders: list[Embedder], distractors: np.ndarray, workdir: pathlib.Path,
                        log=progress_log) -> dict:
  """Learns the mask from the still + frames, protects the clip, and ranks every frame's face
  (clean and protected) against the clean still among the distractors."""
  still_crop = align.align_image(photo_io.read_photo(still)).crop
  clean = _faces(video_io.read_frames(clip))
  log(f"clip: a face in {len(clean)} of {video_io.frame_count(clip)} frames")
  # Frames where the surrogate puts the clean face nearest the still: the person's own frames,
  # as the user would pick them; a few of those, spread out, join the still to learn the mask.
  mine = [i for i, r in _ranks(embedders[0], still_crop, clean, distractors).items() if r == 0]
  train_frames = [mine[j] for j in np.linspace(0, len(mine) - 1, CLIP_TRAIN_FRAMES).round().astype(int)]
  mask, eps, settings = video.learn_mask(
      surrogate_cfg, [still_crop] + [clean[i] for i in train_frames], log)
  mask_path = mask_file.save_mask(workdir / "mask.npz", mask, eps, settings)
  output = workdir / "protected.mp4"
  result = video.protect_video(dataclasses.replace(
      surrogate_cfg, video=str(clip), output=str(output), mask=str(mask_path)), log=log)
  # The same protection before encoding: what the codec takes away from the mask.
  tracker = face_track.FaceTracker(surrogate_cfg.detect_every, surrogate_cfg.max_missed,
                                   face_track.dlib_detect(surrogate_cfg.upsample, surrogate_cfg.face))
  protect = video.frame_protector(mask, eps, tracker, collections.Counter())
  conditions = {"clean": clean,
                "protected, before encoding": _faces(protect(f) for f in video_io.read_frames(clip)),
                "protected, H.264 CRF 18": _faces(video_io.read_frames(output))}
  both = sorted(set.intersection(*(set(c) for c in conditions.values())) - set(train_frames))
  summary = {"frames": result.frames, "measured": len(both), "train_frames": train_frames,
             "faces": {name: len(c) for name, c in conditions.items()}, "track": result.counts,
             "models": {}}
  for model in embedders:
    ranks = {name: _ranks(model, still_crop, {i: c[i] for i in both}, distractors)
             for name, c in conditions.items()}
    summary["models"][model.name] = {
        name: {f"top{k}": sum(r[i] < k for i in both) for k in KS} for name, r in ranks.items()}
  return summary


def _ranks(model: Embedder, still_crop, crops: dict[int, np.ndarray], distractors) -> dict[int, int]:
  """{frame: how many distractors are closer to the frame's face than the still is}."""
  if not crops:
    return {}
  keys = sorted(crops)
  feats = model.embed(np.stack([crops[i] for i in keys]))
  ref = model.embed(still_crop[None])
  ranks = metrics.match_ranks(feats, np.repeat(ref, len(keys), 0), model.embed(distractors))
  return dict(zip(keys, ranks.tolist()))


def throughput(clip: pathlib.Path, cfg: video.VideoConfig, repeats: int, log=progress_log) -> list[float]:
  """Frames per second of protecting the whole clip with a saved mask (decode to encode)."""
  fps = []
  with tempfile.TemporaryDirectory() as tmp:
    for _ in range(repeats):
      result = video.protect_video(dataclasses.replace(
          cfg, video=str(clip), output=str(pathlib.Path(tmp) / "out.mp4")), log=lambda _: None)
      fps.append(result.fps)
      log(f"throughput: {fps[-1]:.1f} fps")
  return fps
