"""The embedded synthetic default dataset: satellite-like video of small moving vehicles.

A seeded, procedural generator. Each video shows textured ground (multi-scale noise; with
`scenery="rich"` also crop fields, building blocks with shadows and trees), one to a few roads
(straight or bent polylines with shoulders; rich roads get lane markings and sometimes a
parking lot), small vehicles that MOVE along the
lanes at constant speed, and look-alike PARKED vehicles (same appearance distribution, on road
shoulders, in parking lots or off-road) that never move. Only moving vehicles are labelled, as
in the real benchmarks: a detector must use time to reject the parked ones.

Conventions (what `SyntheticVideo` holds):
- `frames`: uint8 array (T, H, W, 3) in BGR order (what cv2.imwrite expects).
- Frame indices are 1-based, as in every native format.
- Boxes are float `[x1, y1, x2, y2]` on the continuous image plane where pixel (row i, col j)
  covers [j, j+1) x [i, i+1): `x2 = x1 + width`, an exclusive end like COCO's `x + w`.
  A box is the axis-aligned extent of the vehicle's body (its shadow excluded).
- `boxes[f] = (N x 4 boxes clipped to the frame, N track ids)`; `unclipped_boxes[f]` holds the
  same rows before clipping (VISO and DroneCrowd keep boxes running past the border).
- Visibility: a moving vehicle is labelled in a frame when at least `MIN_VISIBLE_FRACTION` of its
  body is visible, i.e. inside the frame and not under an occluder (a tree canopy or a bridge
  over the road). Hidden vehicles are dropped, as the real benchmarks drop objects one cannot
  see; the label comes back when the vehicle reappears (same track id).
- Camera shake: every frame is the scene seen through a camera offset drawn uniformly in
  [-jitter_px, jitter_px]^2 around a fixed origin (so frame-to-frame shake is up to 2*jitter_px),
  applied to the whole frame with bilinear resampling; labels carry the same shift.

Determinism: video `index` of `split` depends only on (seed, split, index). Its seed sequence is
`SeedSequence(seed, spawn_key=(split_number, index))`, which is exactly the child that
`SeedSequence(seed).spawn(...)[split_number].spawn(...)[index]` would give, built directly so that
regenerating one video never touches the others. Inside a video, separate child streams drive the
layout, the parked vehicles, the moving vehicles, the occluders, the camera and the sensor noise,
so that changing the parked or moving counts, the occlusion probability, the shake or the noise
leaves the rest of the video unchanged (the tests compare such pairs pixel by pixel). Knobs the
layout depends on (vehicle sizes set the lane width, top speed how far roads extend) change it.

Public API (re-exported here): `SyntheticSpec`, `DIFFICULTY_PRESETS`, `spec_from_settings`,
`generate_video`, `split_videos`, `SyntheticVideo`, `MIN_VISIBLE_FRACTION`.

Modules, one job each: `spec` (the spec, its checks, the presets), `videos` (a video from its
parts, camera and sensor), `scenery` (the static scene), `vehicles` (looks, drawing, parked,
movers), `occluders`, `geometry` (shared polygon, window and paint helpers); `native` and
`native_trees` write videos into the native formats of the real datasets.
"""

from micml.data.synthetic.spec import DIFFICULTY_PRESETS, SyntheticSpec, spec_from_settings
from micml.data.synthetic.videos import MIN_VISIBLE_FRACTION, SyntheticVideo, generate_video, split_videos

__all__ = ["DIFFICULTY_PRESETS", "MIN_VISIBLE_FRACTION", "SyntheticSpec", "SyntheticVideo", "generate_video",
           "spec_from_settings", "split_videos"]
