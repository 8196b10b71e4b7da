"""Radiograph-like images of a study's findings, drawn with numpy only.

The picture is a density map (brighter = more attenuating) on a coarse grid, tone-mapped to
8-bit grey, upsampled to the source size and given film grain. Layers, in the order a reader
checks them: soft tissue of the body, lung fields (air), lung markings, mediastinum and spine,
heart, ribs and clavicles, then the findings, then support devices (metal is brightest). The
film gets a black border and a flat scanner band on some sides so that the images stage's
margin crop has something real to cut.

Display convention as in a PA/AP radiograph: the patient's right is on the image's left.
Coordinates are fractions of the image width/height; ``Anatomy`` holds one patient's habitus so
the same patient looks alike across studies.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from PIL import Image

from pipeline.synthetic.findings import StudyFindings

#: Working grid of the density map; the result is upsampled to the source size.
GRID = 256
#: Cardiothoracic ratio (heart width / thorax width) of a normal heart and per severity of
#: Cardiomegaly (mild, moderate, severe). A CTR above 0.5 on a PA film is the textbook sign.
NORMAL_CTR = 0.44
CARDIOMEGALY_CTR: tuple[float, ...] = (0.56, 0.62, 0.68)
#: Effusion height as a share of lung height (small, moderate, large); hedged ones are smaller.
EFFUSION_HEIGHT: tuple[float, ...] = (0.14, 0.27, 0.42)
HEDGED_EFFUSION_HEIGHT = 0.08
#: Width of the lucent pneumothorax rim as a share of the lung half-width.
PNEUMOTHORAX_RIM: tuple[float, ...] = (0.18, 0.3, 0.45)
#: Vertical centre of each lung zone as a share of the lung's height (top → bottom).
ZONE_CENTRE: dict[str, float] = {"upper": 0.22, "mid": 0.5, "lower": 0.78}


@dataclass(frozen=True)
class Anatomy:
    """One patient's habitus: body and lung size, position and film exposure."""

    body_half_width: float
    lung_half_width: float
    lung_gap: float
    lung_top: float
    lung_bottom: float
    exposure: float
    contrast: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Anatomy:
        return cls(
            body_half_width=float(rng.uniform(0.4, 0.47)),
            lung_half_width=float(rng.uniform(0.15, 0.175)),
            lung_gap=float(rng.uniform(0.19, 0.21)),
            lung_top=float(rng.uniform(0.12, 0.18)),
            lung_bottom=float(rng.uniform(0.72, 0.8)),
            exposure=float(rng.uniform(-0.04, 0.04)),
            contrast=float(rng.uniform(0.9, 1.1)),
        )

    def lung_centre_x(self, side: str) -> float:
        """Image x of a lung's centre: the patient's right lung is on the image's left."""
        return 0.5 - self.lung_gap if side == "right" else 0.5 + self.lung_gap

    @property
    def thorax_half_width(self) -> float:
        return self.lung_gap + self.lung_half_width


class Canvas:
    """The coarse density map and its coordinate grids."""

    def __init__(self, size: int = GRID) -> None:
        axis = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.y, self.x = np.meshgrid(axis, axis, indexing="ij")
        self.density = np.zeros((size, size), dtype=np.float32)
        self.size = size


def _soft(distance: np.ndarray, width: float) -> np.ndarray:
    """1 inside (distance < 0), 0 outside, with a smooth edge ``width`` wide."""
    return 1.0 / (1.0 + np.exp(np.clip(distance / width, -30, 30)))


def smooth_noise(rng: np.random.Generator, cells: int, size: int = GRID) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a ``cells``² random grid, bicubically enlarged."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(
        Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    )


def lung_masks(c: Canvas, a: Anatomy, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Soft mask of one lung field and its normalised radius (0 at the centre, 1 at the edge).

    The field is an ellipse whose mediastinal side is flattened and whose apex is narrower,
    roughly the outline of a lung on a frontal film.
    """
    cy = (a.lung_top + a.lung_bottom) / 2
    hh = (a.lung_bottom - a.lung_top) / 2
    cx = a.lung_centre_x(side)
    lateral = -1.0 if side == "right" else 1.0
    u = (c.x - cx) / a.lung_half_width * lateral  # > 0 towards the ribs
    v = (c.y - cy) / hh  # < 0 towards the apex
    taper = 1.0 + 0.35 * np.clip(-v, 0, None)  # narrower at the apex
    u = np.where(u < 0, u * 1.25, u) * taper
    radius = np.sqrt(u * u + v * v)
    return _soft(radius - 1.0, 0.03), radius


def heart_mask(c: Canvas, a: Anatomy, ctr: float) -> np.ndarray:
    """The cardiac silhouette: an ellipse low in the chest, two thirds to the patient's left."""
    width = ctr * 2 * a.thorax_half_width
    left_extent = width * 0.62  # towards the patient's left (image right)
    right_extent = width - left_extent
    cx = 0.5 + (left_extent - right_extent) / 2
    hw = width / 2
    hh = 0.1 + 0.04 * (ctr - NORMAL_CTR) / 0.2
    cy = a.lung_bottom - hh * 0.7
    return _soft(np.sqrt(((c.x - cx) / hw) ** 2 + ((c.y - cy) / hh) ** 2) - 1.0, 0.02)


def segment_mask(c: Canvas, points: list[tuple[float, float]], half_width: float) -> np.ndarray:
    """A thick polyline (tubes, leads, bands) through ``points``, as a soft mask.

    Exact point-to-segment distance, one pass per segment, inside the polyline's bounding box.
    """
    mask = np.zeros_like(c.density)
    pts = np.asarray(points, dtype=np.float32)
    margin = half_width * 4
    y0, y1 = pts[:, 1].min() - margin, pts[:, 1].max() + margin
    x0, x1 = pts[:, 0].min() - margin, pts[:, 0].max() + margin
    rows = slice(max(int(y0 * c.size), 0), min(int(y1 * c.size) + 1, c.size))
    cols = slice(max(int(x0 * c.size), 0), min(int(x1 * c.size) + 1, c.size))
    xs, ys = c.x[rows, cols], c.y[rows, cols]
    best = np.full(xs.shape, np.inf, dtype=np.float32)
    for (ax, ay), (bx, by) in pairwise(pts):
        dx, dy = bx - ax, by - ay
        t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
        np.minimum(best, (xs - ax - t * dx) ** 2 + (ys - ay - t * dy) ** 2, out=best)
    mask[rows, cols] = _soft(np.sqrt(best) - half_width, half_width * 0.3)
    return mask


def draw_ribs(c: Canvas, a: Anatomy, thorax: np.ndarray) -> np.ndarray:
    """Nine posterior ribs per side as gently curved bright bands, and two clavicles.

    The ribs of one side share one curve shifted down by a fixed spacing, so the distance to
    the nearest rib is a periodic function of (y − curve(x)): one pass, not one per rib.
    """
    spacing = (a.lung_bottom - a.lung_top) / 9.2
    dx = np.abs(c.x - 0.5) - 0.03
    curve = a.lung_top + 0.02 + 0.9 * dx * dx - 0.02 * dx / 0.3
    phase = (c.y - curve) / spacing
    nearest = np.clip(np.round(phase), 0, 8)
    ribs = _soft(np.abs(phase - nearest) * spacing - 0.011, 0.004) * (dx > 0)
    clavicle = a.lung_top + 0.02 + 0.12 * np.abs(c.x - 0.5)
    inside = (np.abs(c.x - 0.5) > 0.05) & (np.abs(c.x - 0.5) < a.thorax_half_width * 0.95)
    ribs = np.maximum(ribs, _soft(np.abs(c.y - clavicle) - 0.01, 0.004) * inside)
    return ribs * thorax


def _zone_centre(a: Anatomy, side: str, zone: str) -> tuple[float, float]:
    y = a.lung_top + ZONE_CENTRE[zone] * (a.lung_bottom - a.lung_top)
    lateral = -1.0 if side == "right" else 1.0
    return a.lung_centre_x(side) + lateral * 0.2 * a.lung_half_width, y


def _sides(side: str) -> tuple[str, ...]:
    return ("right", "left") if side == "bilateral" else (side,)


def draw_frontal(
    study: StudyFindings,
    anatomy: Anatomy,
    view: str,
    rng: np.random.Generator,
    regions: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Density map of a PA or AP film (float32, ``GRID``²).

    ``regions``, when given, receives the extent (0–1, ``GRID``²) of each drawn finding, keyed
    by kind (``device:<name>`` per device): the synthetic corpus's localized ground truth
    (pipeline/synthetic/regions.py). Collecting them draws no extra random numbers, so the
    image is the same with or without.
    """
    c, a = Canvas(), anatomy
    found: dict[str, np.ndarray] = regions if regions is not None else {}
    body = _soft(
        np.abs(c.x - 0.5) - a.body_half_width + 0.04 * (c.y < 0.15) * (0.15 - c.y) * 6, 0.01
    )
    cardiomegaly = study.get("cardiomegaly")
    ctr = NORMAL_CTR + float(rng.normal(0, 0.015))
    if cardiomegaly is not None:
        ctr = CARDIOMEGALY_CTR[cardiomegaly.severity] + float(rng.normal(0, 0.01))
    if view == "AP":
        ctr *= 1.05  # the heart is magnified on AP films (further from the detector)
    heart = heart_mask(c, a, ctr)
    if cardiomegaly is not None:
        found["cardiomegaly"] = heart
    markings = 0.5 + 0.5 * smooth_noise(rng, 24)
    air = np.zeros_like(c.density)
    lucent = np.zeros_like(c.density)
    fluid = np.zeros_like(c.density)
    opacity = np.zeros_like(c.density)
    for side in ("right", "left"):
        lung, radius = lung_masks(c, a, side)
        lung = lung * (1.0 - heart)
        air += lung
        effusion = study.get("effusion")
        if effusion is not None and side in _sides(effusion.side):
            share = (
                HEDGED_EFFUSION_HEIGHT if effusion.hedged else EFFUSION_HEIGHT[effusion.severity]
            )
            height = share * (a.lung_bottom - a.lung_top)
            lateral = np.abs(c.x - a.lung_centre_x(side)) / a.lung_half_width
            level = a.lung_bottom - height - 0.35 * height * np.clip(lateral, 0, 1.5) ** 2
            fluid += lung * _soft(level - c.y, 0.008)  # meniscus: higher at the chest wall
        pneumothorax = study.get("pneumothorax")
        if pneumothorax is not None and pneumothorax.side == side:
            rim = PNEUMOTHORAX_RIM[pneumothorax.severity]
            towards_apex = (c.y < a.lung_top + 0.7 * (a.lung_bottom - a.lung_top)).astype(
                np.float32
            )
            lateral_sign = (c.x - a.lung_centre_x(side)) * (-1 if side == "right" else 1)
            band = _soft((1.0 - rim) - radius, 0.01) * (lateral_sign > -0.3 * a.lung_half_width)
            lucent += lung * band * towards_apex
            edge = np.exp(-(((radius - (1.0 - rim)) / 0.012) ** 2)) * towards_apex
            opacity += 0.25 * lung * edge * (lateral_sign > -0.3 * a.lung_half_width)
    air = np.clip(air, 0, 1)
    lucent = np.clip(lucent, 0, 1)
    fluid = np.clip(fluid, 0, 1)
    if study.get("effusion") is not None:
        found["effusion"] = fluid
    if study.get("pneumothorax") is not None:
        found["pneumothorax"] = lucent
    nodule = study.get("nodule")
    if nodule is not None:
        nx, ny = _zone_centre(a, nodule.side, nodule.zone)
        r = 0.006 + nodule.size_mm * 0.0011
        spot = _soft(np.sqrt((c.x - nx) ** 2 + (c.y - ny) ** 2) - r, 0.003)
        found["nodule"] = spot * air
        opacity += 0.45 * spot * air
    consolidation = study.get("consolidation")
    if consolidation is not None:
        cx, cy = _zone_centre(a, consolidation.side, consolidation.zone)
        cx = a.lung_centre_x(consolidation.side)
        region = _soft(
            np.sqrt(((c.x - cx) / (a.lung_half_width * 1.1)) ** 2 + ((c.y - cy) / 0.1) ** 2) - 1,
            0.08,
        )
        patches = np.clip(0.7 + 0.4 * smooth_noise(rng, 40), 0, 1)
        strength = 0.32 if consolidation.severity == 0 else 0.45
        found["consolidation"] = region * air
        opacity += strength * region * patches * air
    atelectasis = study.get("atelectasis")
    if atelectasis is not None:
        cx, cy = _zone_centre(a, atelectasis.side, "lower")
        half = 0.45 * a.lung_half_width
        tilt = float(rng.uniform(-0.02, 0.02))
        band = segment_mask(c, [(cx - half, cy - tilt), (cx + half, cy + tilt)], 0.006)
        found["atelectasis"] = band * air
        opacity += (0.18 if atelectasis.hedged else 0.3) * band * air
    mediastinum = body * _soft(np.abs(c.x - 0.5) - 0.06, 0.01) * (c.y < a.lung_bottom)
    spine = body * _soft(np.abs(c.x - 0.5) - 0.035, 0.006)
    thorax = body * (c.y < a.lung_bottom + 0.02)
    d = 0.5 * body
    d -= 0.34 * air * (1.0 - fluid)
    d += 0.07 * air * (1.0 - fluid) * (1.0 - lucent) * markings
    d -= 0.07 * lucent * (1.0 - fluid)
    d += 0.1 * fluid
    d += 0.12 * mediastinum + 0.1 * spine + 0.1 * heart
    d += 0.07 * draw_ribs(c, a, thorax) * (1.0 - 0.5 * heart)
    d += opacity
    devices = study.get("devices")
    metal = np.zeros_like(d)
    if devices is not None:
        for device in devices.devices:
            found[f"device:{device}"] = device_mask(c, a, device)
            metal = np.maximum(metal, found[f"device:{device}"])
    marker = np.zeros_like(d)
    mx = 0.86 if view == "AP" else 0.1
    marker[
        int(0.06 * c.size) : int(0.09 * c.size), int(mx * c.size) : int((mx + 0.05) * c.size)
    ] = 1
    d = np.maximum(d, 0.95 * metal)
    d = np.maximum(d, 0.9 * marker)
    return d + 0.08


def device_mask(c: Canvas, a: Anatomy, device: str) -> np.ndarray:
    """Tubes, catheter and pacemaker as thin metal-bright lines (and a box)."""
    carina_y = a.lung_top + 0.2 * (a.lung_bottom - a.lung_top)
    if device == "endotracheal tube":
        return segment_mask(c, [(0.5, 0.0), (0.5, carina_y - 0.06)], 0.005)
    if device == "central venous catheter":
        return segment_mask(
            c, [(0.3, 0.02), (0.38, 0.1), (0.46, 0.16), (0.47, carina_y + 0.05)], 0.003
        )
    if device == "enteric tube":
        return segment_mask(
            c, [(0.49, 0.0), (0.49, a.lung_bottom), (0.58, a.lung_bottom + 0.08)], 0.004
        )
    if device == "pacemaker":
        box = ((np.abs(c.x - 0.74) < 0.045) & (np.abs(c.y - (a.lung_top + 0.04)) < 0.028)).astype(
            np.float32
        )
        leads = segment_mask(
            c, [(0.72, a.lung_top + 0.04), (0.56, 0.3), (0.5, a.lung_bottom - 0.12)], 0.003
        )
        return np.maximum(box, leads)
    raise ValueError(f"unknown support device {device!r}")


def draw_lateral(study: StudyFindings, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Density map of a lateral film: one lung field, heart in front, spine behind."""
    c, a = Canvas(), anatomy
    body = _soft(np.abs(c.x - 0.5) - (a.body_half_width * 0.85), 0.01)
    lung = _soft(
        np.sqrt(
            ((c.x - 0.52) / 0.3) ** 2 + ((c.y - 0.47) / ((a.lung_bottom - a.lung_top) / 2)) ** 2
        )
        - 1,
        0.03,
    )
    cardiomegaly = study.get("cardiomegaly")
    size = 0.11 if cardiomegaly is None else 0.14 + 0.02 * cardiomegaly.severity
    heart = _soft(np.sqrt(((c.x - 0.36) / size) ** 2 + ((c.y - 0.62) / 0.14) ** 2) - 1, 0.02)
    spine = _soft(np.abs(c.x - 0.78) - 0.05, 0.01) * body
    fluid = np.zeros_like(c.density)
    effusion = study.get("effusion")
    if effusion is not None and not effusion.hedged:
        level = a.lung_bottom - 0.1 * (1 + effusion.severity) - 0.3 * np.clip(c.x - 0.55, 0, None)
        fluid = _soft(level - c.y, 0.01) * lung
    markings = 0.5 + 0.5 * smooth_noise(rng, 24)
    air = lung * (1 - heart) * (1 - fluid)
    return 0.08 + 0.5 * body - 0.3 * air + 0.06 * air * markings + 0.2 * heart + 0.15 * spine


def add_film(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A black film border on some sides and, often, a flat grey scanner band (all at 0 noise)."""
    out = image.copy()
    for side in range(4):
        if rng.random() < 0.6:
            width = int(rng.integers(4, 18))
            _strip(out, side, width, 0)
    if rng.random() < 0.6:
        side = int(rng.integers(0, 4))
        width = int(rng.integers(10, 28))
        level = int(rng.integers(70, 170))
        _strip(out, side, width, level)
    return out


def _strip(image: np.ndarray, side: int, width: int, value: int) -> None:
    if side == 0:
        image[:width] = value
    elif side == 1:
        image[-width:] = value
    elif side == 2:
        image[:, :width] = value
    else:
        image[:, -width:] = value


def render(
    study: StudyFindings,
    anatomy: Anatomy,
    view: str,
    size: int,
    rng: np.random.Generator,
    regions: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """The 8-bit grey image (``size``²) of one view of one study.

    ``regions`` (frontal views) receives each drawn finding's extent, see :func:`draw_frontal`.
    """
    if view == "LATERAL":
        density = draw_lateral(study, anatomy, rng)
    else:
        density = draw_frontal(study, anatomy, view, rng, regions)
    tone = (density - 0.08) * anatomy.contrast + 0.08 + anatomy.exposure
    coarse = Image.fromarray(np.clip(tone * 255.0, 0, 255).astype(np.float32), mode="F")
    fine = np.asarray(coarse.resize((size, size), Image.Resampling.BILINEAR))
    grain = rng.standard_normal((size, size), dtype=np.float32) * 3.0
    pixels = np.clip(fine + grain, 0, 255).astype(np.uint8)
    return add_film(pixels, rng)
