"""Benchmark the images stage against a naive PIL loop on MIMIC-like JPEGs.

Inputs: real sample radiographs upscaled to ~2500×3000 with film-grain noise, saved as JPEG
q95 (0.8–2.5 MB each, like MIMIC-CXR-JPG). In one run it measures

(a) naive: one process, full-resolution PIL decode, crop (to the box the stage found, so the
    naive loop is spared margin detection and the two outputs are pixel-aligned), LANCZOS
    resize to 512, pad, JPEG q95 — the straightforward way to do it;
(b) the images stage (reduced-scale decode, margins, resize, pad, encode) on all workers;
(c) the floor: libjpeg-turbo reduced-scale decode alone (Pillow draft, same scale as (b)),
    in one process, and (d) the same on all workers: a/d is the best ratio *any* stage that
    decodes every file could reach on this machine.

and prints the wall-clock ratio a/b, the PSNR of (b)'s output vs (a)'s (on the content area,
padding excluded), and how close (b) is to the floor: b/d (same workers), and per core vs (c).

Film grain is what makes these files large, and on q95 JPEGs the entropy (Huffman) decoding of
that grain costs the same at every DCT scale. Each input gets its own grain level drawn from
``--grain LOW HIGH`` (default 1–4 grey levels: 1.0–2.1 MB files, mean 1.6 MB, close to
MIMIC-CXR-JPG's ≈ 1.5 MB per image); ``--grain 4 4`` gives the heaviest, entropy-bound set.

    python benchmarks/bench_images.py --images 120 --out /tmp/bench_images --workers 2
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from pipeline import images as stage
from pipeline.parallel import default_workers, parallel_map
from pipeline.params import DatasetPaths
from pipeline.records import INGEST_COLUMNS, write_parquet

DEFAULT_SOURCES = Path(__file__).resolve().parents[1] / "data/sample/images"
QUALITY = 95


def source_images(root: Path) -> list[Path]:
    """Real 8-bit/RGBA PNG radiographs (full-size films only, not the 512² thumbnails)."""
    found = sorted(root.glob("nih_chestxray14/*.png")) + sorted(root.glob("mhh_*/*.png"))
    return [p for p in found if "xrv512" not in p.name]


def film_grain(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Spatially correlated noise (blurred white noise, unit variance scaled to ``sigma``)."""
    noise = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), 0.8)
    return noise * (sigma / float(noise.std()))


def make_inputs(
    root: Path, sources: list[Path], count: int, grain_range: tuple[float, float], seed: int
) -> list[Path]:
    """``count`` MIMIC-like JPEGs under ``root`` (reused when already there)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    low, high = grain_range
    paths = []
    for index in range(count):
        sigma = float(rng.uniform(low, high))
        path = root / f"mimic_like_s{seed}_g{low:g}-{high:g}_{index:04d}.jpg"
        width, height = int(rng.integers(2400, 2700)), int(rng.integers(2900, 3150))
        grain = film_grain((height, width), sigma, rng)
        paths.append(path)
        if path.is_file():
            continue
        with Image.open(sources[index % len(sources)]) as image:
            grey = np.asarray(image.convert("L"))
        big = cv2.resize(grey, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        pixels = np.clip(big + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, format="JPEG", quality=QUALITY)
    return paths


def ingest_table(paths: DatasetPaths, files: list[Path]) -> None:
    rows = [
        {
            "dataset": "bench",
            "image_id": f.stem,
            "patient_id": f.stem,
            "study_id": f.stem,
            "view": "PA",
            "image_path": f.name,
            "report_text": "",
            "official_split": "",
            "synthetic_report": True,
            "extra_json": "{}",
        }
        for f in files
    ]
    write_parquet(
        pd.DataFrame(rows, columns=list(INGEST_COLUMNS)),
        paths.stage_dir("ingest") / "records.parquet",
    )


def naive_one(
    path: Path, box: tuple[int, int, int, int], content: tuple[int, int], target: Path
) -> np.ndarray:
    """Full decode → crop → LANCZOS → pad → JPEG file; returns the pre-encoding content array."""
    with Image.open(path) as image:
        grey = image.convert("L")
        resized = grey.crop(box).resize(content, Image.Resampling.LANCZOS)
    canvas = Image.new("L", (512, 512), 0)
    canvas.paste(resized, ((512 - content[0]) // 2, (512 - content[1]) // 2))
    canvas.save(target, format="JPEG", quality=QUALITY)
    return np.asarray(resized)


def decode_only(job: tuple[Path, int]) -> tuple[int, int]:
    """The floor: read + reduced-scale libjpeg-turbo decode, nothing else; the decoded size."""
    path, scale = job
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        if scale > 1:
            image.draft("L", (math.ceil(image.width / scale), math.ceil(image.height / scale)))
        image.load()
        return image.size


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120, help="number of synthetic inputs")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_images"))
    parser.add_argument("--workers", type=int, default=0, help="stage workers (0 = all cores)")
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES)
    parser.add_argument(
        "--grain",
        type=float,
        nargs=2,
        default=(1.0, 4.0),
        metavar=("LOW", "HIGH"),
        help="film-grain sigma range in grey levels; each input draws its own",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; best is kept")
    parser.add_argument("--interpolation", default="lanczos", help="images.interpolation")
    args = parser.parse_args()
    workers = args.workers or default_workers()

    raw = args.out / "raw"
    files = make_inputs(raw, source_images(args.sources), args.images, tuple(args.grain), args.seed)
    sizes = [f.stat().st_size / 1e6 for f in files]
    mean_mb = statistics.mean(sizes)
    print(f"{len(files)} inputs, {min(sizes):.2f}–{max(sizes):.2f} MB (mean {mean_mb:.2f})")
    paths = DatasetPaths("bench", "sample", raw, args.out / "interim", args.out / "shards")
    ingest_table(paths, files)
    for f in files:  # warm the page cache so every contender reads from memory
        f.read_bytes()

    stage_params = {"images": {"montage_count": 4, "interpolation": args.interpolation}}
    stats = stage.run_stage(paths, stage_params, workers)  # also gives the naive loop its boxes
    assert stats["out"] == len(files), stats
    records = pd.read_parquet(paths.stage_dir("images") / "records.parquet")
    naive_dir = args.out / "naive"
    naive_dir.mkdir(parents=True, exist_ok=True)
    naive: dict[str, np.ndarray] = {}

    def run_naive() -> None:
        for row in records.itertuples(index=False):
            box = (row.crop_left, row.crop_top, row.crop_right, row.crop_bottom)
            content = (row.content_width, row.content_height)
            target = naive_dir / f"{row.image_id}.jpg"
            naive[row.image_id] = naive_one(raw / row.image_path, box, content, target)

    jobs = [(raw / row.image_path, int(row.decode_scale)) for row in records.itertuples()]
    contenders = {
        "naive": run_naive,
        "stage": lambda: stage.run_stage(paths, stage_params, workers),
        "floor": lambda: [decode_only(job) for job in jobs],
        "floor_all": lambda: list(parallel_map(decode_only, jobs, workers, "decode only")),
    }
    # Interleaved rounds, best of each: a busy neighbour or a clock change then hits every
    # contender alike instead of deciding the ratio.
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeat):
        for name, contender in contenders.items():
            start = time.perf_counter()
            contender()
            times[name].append(time.perf_counter() - start)
    t_naive, t_stage = min(times["naive"]), min(times["stage"])
    t_floor, t_floor_all = min(times["floor"]), min(times["floor_all"])

    scores = []
    for row in records.itertuples(index=False):
        with Image.open(paths.stage_dir("images") / row.image_file) as written:
            ours = np.asarray(written)
        content = ours[
            row.pad_top : row.pad_top + row.content_height,
            row.pad_left : row.pad_left + row.content_width,
        ]
        scores.append(psnr(content, naive[row.image_id]))

    n = len(files)
    per_core = t_stage * workers / n
    scales = records["decode_scale"].value_counts().to_dict()
    print(f"decode scales used: {scales}; workers: {workers}; best of {args.repeat} rounds")
    print(f"(a) naive single-process PIL: {t_naive:7.2f} s  ({1000 * t_naive / n:6.1f} ms/image)")
    print(
        f"(b) images stage, {workers} workers: {t_stage:7.2f} s  ({1000 * t_stage / n:6.1f} "
        f"ms/image wall, {1000 * per_core:6.1f} ms/image per core)"
    )
    print(f"(c) reduced-scale decode only:  {t_floor:7.2f} s  ({1000 * t_floor / n:6.1f} ms/image)")
    print(
        f"(d) decode only, {workers} workers: {t_floor_all:7.2f} s  "
        f"({1000 * t_floor_all / n:6.1f} ms/image wall)"
    )
    print(
        f"speed-up a/b: {t_naive / t_stage:.2f}x  (target ≥ 6x; decode-only ceiling a/d "
        f"{t_naive / t_floor_all:.2f}x, a/c per core {t_naive / t_floor:.2f}x)"
    )
    print(
        f"PSNR stage vs naive (content area): mean {statistics.mean(scores):.2f} dB, "
        f"min {min(scores):.2f} dB  (target ≥ 40)"
    )
    print(
        f"stage / decode-only on the same {workers} workers (b/d): {t_stage / t_floor_all:.2f}x  "
        f"(target ≤ 1.5x); per core vs one decode process (b·{workers}/c): "
        f"{per_core / (t_floor / n):.2f}x, which also carries the second core's scaling "
        f"({t_floor / t_floor_all:.2f}x for decode alone)"
    )


if __name__ == "__main__":
    main()
