"""Occluders: tree canopies and bridges over roads, drawn above the moving vehicles."""

from __future__ import annotations

import numpy as np

from micml.data.synthetic.geometry import (Window, canvas_window, line_alpha, paint, polygon_alpha, rect_corners,
                                           tinted, window_shape)
from micml.data.synthetic.scenery import Layout, Road, canopy, road_points_in_image
from micml.data.synthetic.spec import SyntheticSpec
from micml.data.synthetic.vehicles import Look, canvas_regions, vehicle_patches


class Occluders:
    def __init__(self, shape: tuple[int, int]):
        self.alpha = np.zeros(shape, np.float32)
        self.colour = np.zeros(shape + (3,), np.float32)
        self.empty = True

    def add(self, window: Window, alpha: np.ndarray, colour: np.ndarray) -> None:
        covered, colours = self.alpha[window], self.colour[window]
        on_top = alpha > covered
        colours[on_top] = colour[on_top]
        np.maximum(covered, alpha, out=covered)
        self.empty = False

    def apply(self, canvas: np.ndarray, centres: np.ndarray, headings: np.ndarray, look: Look) -> np.ndarray:
        """Paint the occluders over `canvas`; return each vehicle's unoccluded body fraction."""
        unoccluded = np.ones(len(look))
        if self.empty:
            return unoccluded
        if len(look):
            body, _, _, origins = vehicle_patches(centres, headings, look)
            for i, (xs, ys) in canvas_regions(self.alpha.shape, origins, body.shape[1]):
                patch = body[i][ys.start - origins[i, 1]:ys.stop - origins[i, 1],
                                xs.start - origins[i, 0]:xs.stop - origins[i, 0]]
                unoccluded[i] = 1.0 - float(np.sum(patch * self.alpha[ys, xs])) / max(float(body[i].sum()), 1e-9)
        paint(canvas, self.alpha, self.colour)
        return unoccluded


def build_occluders(rng: np.random.Generator, spec: SyntheticSpec, layout: Layout) -> Occluders:
    occluders = Occluders(layout.canvas.shape[:2])
    for road in layout.roads:
        if rng.random() >= spec.occlusion_probability:
            continue
        _, points, headings = road_points_in_image(rng, layout, road.centre, 1)
        if not len(points):
            continue
        if rng.random() < 0.5:
            radius = min(rng.uniform(0.25, 0.45) * road.full_width + 2, 12.0)
            centre = points[0] + rng.uniform(-0.25, 0.25, 2) * road.lanes_width
            occluders.add(*canopy(rng, layout.canvas.shape[:2], centre, radius))
        else:
            occluders.add(*_bridge(rng, layout.canvas.shape[:2], points[0], headings[0], road))
    return occluders


def _bridge(rng: np.random.Generator, shape, centre, road_heading: float, road: Road):
    """(window, alpha, colour) of a concrete deck crossing the road at right angles, with railings."""
    deck = rng.uniform(5, 11)
    corners = rect_corners(centre, road_heading + np.pi / 2, road.full_width + 10, deck)
    luma = rng.uniform(0.55, 0.7)
    window = canvas_window(shape, corners)
    colour = np.broadcast_to(tinted((1, 1, 1), luma), window_shape(window) + (3,)).copy()
    for side in (corners[[0, 3]], corners[[1, 2]]):
        paint(colour, line_alpha(window, side) * 0.6, tinted((1, 1, 1), luma * 0.6))
    return window, polygon_alpha(window, corners), colour
