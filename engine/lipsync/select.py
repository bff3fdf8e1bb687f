"""Choose, for every output frame, a source frame whose mouth matches the predicted shape.

Dynamic programming (Viterbi) over each frame's nearest candidates: the cost of a frame is its
shape distance plus a head-pose distance, and a jump between source frames that are not
consecutive costs extra, so the chosen footage runs in smooth stretches instead of flickering
between unrelated frames (the idea of Video Rewrite, 1997, and "Synthesizing Obama", 2017).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SelectSettings:
    candidates: int = 24  # nearest source frames considered per output frame
    pose_weight: float = 2.0  # per (10 degrees)^2 of head-pose difference
    jump_cost: float = 1.5  # switching to a non-consecutive source frame
    hold_cost: float = 0.8  # showing the same source frame twice (a frozen mouth)


def select_frames(predicted: np.ndarray, target_pose: np.ndarray, codes: np.ndarray,
                  poses: np.ndarray, source_index: np.ndarray, scale: np.ndarray,
                  settings: SelectSettings = SelectSettings()) -> np.ndarray:
    """Positions into ``codes`` (one per output frame) minimising shape, pose and jump costs.

    ``predicted`` (M, D) and ``target_pose`` (M, 3) describe the output frames; ``codes`` (K, D),
    ``poses`` (K, 3) and ``source_index`` (K,) the candidate source frames; ``scale`` (D,)
    weighs shape components evenly.
    """
    m, k = len(predicted), len(codes)
    n = min(settings.candidates, k)
    shape_d = (((predicted[:, None, :] - codes[None]) / scale) ** 2).sum(-1)  # (M, K)
    pose_d = (((target_pose[:, None, :] - poses[None]) / 10.0) ** 2).sum(-1)
    unary = shape_d + settings.pose_weight * pose_d
    cand = np.argsort(unary, axis=1, kind="stable")[:, :n]  # (M, n)
    cost = np.take_along_axis(unary, cand, 1)
    src = source_index[cand]  # (M, n) source frame numbers
    total = cost[0].copy()
    back = np.zeros((m, n), dtype=np.int64)
    for i in range(1, m):
        step = src[i][None, :] - src[i - 1][:, None]  # (prev, cur)
        trans = np.where(step == 1, 0.0, np.where(step == 0, settings.hold_cost,
                                                   settings.jump_cost))
        options = total[:, None] + trans
        back[i] = np.argmin(options, axis=0)
        total = options[back[i], np.arange(n)] + cost[i]
    path = np.empty(m, dtype=np.int64)
    path[-1] = int(np.argmin(total))
    for i in range(m - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return cand[np.arange(m), path]
