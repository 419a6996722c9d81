"""The bench's plumbing on tiny inputs (not its timings): rows, files, tables and figures."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import large, rd, seed
from bench.__main__ import bench_classical, bench_vlaecodec, write
from bench.quality import ms_ssim, psnr

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "kodim23_crop.png"


def test_lossless_rows_and_files(model_path, rng, tmp_path):
    images = [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), rng.integers(0, 256, (7, 9, 1), dtype=np.uint8)]
    rows = [bench_classical("png", "tiny", images)]
    for archive in (False, True):
        rows.append(bench_vlaecodec(model_path, "tiny", images, archive))
    assert all(r["exact"] for r in rows)
    ours = rows[1]
    assert ours["bpd"] > 0 and ours["elbo_bpd"] > 0 and ours["n"] == 2
    write(rows, tmp_path, "lossless", {"command": "test", "machine": "test", "date": "today"})
    with (tmp_path / "lossless.csv").open() as f:
        table = list(csv.DictReader(f))
    assert {"dataset", "codec", "bpd", "elbo_bpd"} <= set(table[0])
    assert table[1]["elbo_bpd"] != ""


def test_quality_measures():
    a = np.random.default_rng(0).integers(0, 256, (170, 170, 3), dtype=np.uint8)
    assert psnr(a, a) == float("inf") and abs(ms_ssim(a, a) - 1) < 1e-9
    noisy = np.clip(a.astype(int) + 20, 0, 255).astype(np.uint8)
    assert psnr(a, noisy) < 40 and ms_ssim(a, noisy) < 1


def test_rate_distortion_rows_and_plot(model_path, rng, tmp_path):
    images = [rng.integers(0, 256, (168, 168, 3), dtype=np.uint8)]
    rows = rd.classical_rows(images)
    rows += rd.near_lossless_rows(images, [2], model_path)
    rows += rd.lossy_rows(images, {model_path: 1.0}, [0])
    near = [r for r in rows if r["family"] == "near-lossless"]
    assert {r["codec"] for r in near} == {"jpegls", "vlaecodec:tiny"}
    assert all(r["max_abs_error"] <= 2 for r in near)
    assert {"jpeg", "webp", "jpegxl", "avif", "vlaecodec:z-only"} <= {r["codec"] for r in rows if r["family"] == "lossy"}
    rd.write(rows, tmp_path, {"command": "test", "machine": "test", "date": "today", "images": "random"})
    assert (tmp_path / "rd.png").stat().st_size > 0
    assert len(json.loads((tmp_path / "rd.json").read_text())["rows"]) == len(rows)


def test_hyperprior_rows_and_bd_rates(rng, tmp_path):
    """The lossy model's rows are real files decoded and measured; BD-rates come out of the
    same rows (a random model is far worse than every codec: positive, finite BD-rates)."""
    import torch
    from safetensors.torch import save_file

    from vlaecodec.lossy_coder import LossyTables
    from vlaecodec.lossy_model import LossyConfig, LossyModel
    torch.manual_seed(0)
    model = LossyModel(LossyConfig(n=8, m=8)).eval()
    path = tmp_path / "tiny-lossy.safetensors"
    save_file({**{k: v.contiguous() for k, v in model.state_dict().items()},
               **LossyTables.from_model(model).to_tensors()}, str(path),
              metadata={"config": json.dumps(model.cfg.to_dict()), "kind": "lossy"})
    yy, xx = np.mgrid[0:168, 0:168]
    images = [np.stack([(xx + yy) % 256, xx, yy], -1).astype(np.uint8)]
    rows = rd.classical_rows(images) + rd.hyperprior_rows(images, str(path), [800.0, 10.0], 1)
    mine = [r for r in rows if r["codec"] == "vlaecodec:tiny-lossy"]
    assert len(mine) == 2 and all(r["bpp"] > 0 and r["dec_s_per_image"] > 0 for r in mine)
    bd = rd.bd_rates(rows, "vlaecodec:tiny-lossy", lo=0.01, hi=8)
    assert {b["anchor"] for b in bd} == {"jpeg", "webp", "jpegxl", "avif"}
    # --target-bpp's rows: the rate it reached and how far from the target, in the table too
    target = (mine[0]["bpp"] * mine[1]["bpp"]) ** 0.5
    landed = rd.target_rows(images, str(path), [target], 1)[0]
    assert landed["family"] == "target" and landed["max_miss"] == abs(landed["bpp"] / target - 1)
    rd.write(rows + [landed], tmp_path, {"command": "test", "machine": "test", "date": "today", "images": "one"})
    assert f"| {target:g} | {landed['bpp']:.4f} |" in (tmp_path / "rd.md").read_text()


def test_seed_table_files_and_pictures(model_path, rng, tmp_path):
    row = {"row": "VLAE", "model": "tiny", "data": "cifar10-test", "n": 3, "bpd": 5.0, "distortion_bpd": 4.9,
           "rate_bpd": 0.1, "nats_per_image": 1.0, "kl_nats_per_image": 0.1, "active_units": 1,
           "latent_channels": 2, "kl_bits_per_latent_channel": [0.1, 0.0], "train_seconds": 1.0,
           "hardware": ["cpu"]}
    seed.write([row], tmp_path, {"command": "test", "machine": "test", "date": "today"})
    seed.kl_figure([row], tmp_path / "kl.png")
    assert "| VLAE | tiny |" in (tmp_path / "seed.md").read_text()
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    panels = seed.pictures(model_path, images, k=2)
    assert len(panels) == 3 and all(p.width > 0 for _, p in panels)


def test_large_image_row_and_table(model_path, rng, tmp_path):
    tiles = [rng.integers(0, 256, (6, 9, 3), dtype=np.uint8) for _ in range(3)]
    img = large.mosaic(tiles, 20, grey=True)
    row = large.measure(img, "mosaic 20x20 grey", model_path)
    assert row["exact"] and row["bpd"] == row["bytes"] * 8 / 400
    row["command"] = "test"
    large.write([row], tmp_path, {"machine": "test", "date": "today"})
    assert "| mosaic 20x20 grey |" in (tmp_path / "large.md").read_text()


def test_large_image_lossy_row(tmp_path):
    img = large.mosaic([np.asarray(Image.open(SAMPLE).convert("RGB"))], 160)
    row = large.measure(img, "mosaic 160x160 RGB", "lossy", beta=100.0)
    assert row["model"] == "lossy@100" and not row["exact"] and row["psnr"] > 25
    row["command"] = "test"
    large.write([row], tmp_path, {"machine": "test", "date": "today"})
    assert "| lossy@100 |" in (tmp_path / "large.md").read_text() and " dB |" in (tmp_path / "large.md").read_text()


def test_merge_keeps_the_rows_a_run_does_not_remake():
    from bench.__main__ import merged
    old = {"meta": {"command": "first"},
           "rows": [{"dataset": "kodak", "codec": "vlaecodec:a"}, {"dataset": "kodak", "codec": "vlaecodec:b"}]}
    rows = merged(old, [{"dataset": "kodak", "codec": "vlaecodec:b", "command": "second"}])
    assert rows == [{"dataset": "kodak", "codec": "vlaecodec:a", "command": "first"},
                    {"dataset": "kodak", "codec": "vlaecodec:b", "command": "second"}]


def test_speed_bench_times_whole_processes_and_checks_round_trips(model_path, tmp_path):
    from bench import speed
    speed.main(["--images", "1", "--crop", "24", "--threads", "1", "--models", model_path,
                "--out", str(tmp_path), "--name", "s"])
    out = json.loads((tmp_path / "s.json").read_text())
    rows, summary = out["rows"], out["summary"]
    assert {r["codec"] for r in rows} == {f"vlaecodec:{model_path}", "jpegxl-e7", "jpegxl-e9", "webp-lossless-m6"}
    assert all(r["exact"] and r["bits_per_dim"] > 0 and r["encode_s"] > 0 for r in rows)
    ours = next(s for s in summary if s["codec"].startswith("vlaecodec"))
    assert ours["peak_rss_mb"] > 10 and ours["all_exact"]
    e9 = next(r for r in rows if r["codec"] == "jpegxl-e9")
    assert abs(ours["decode_x_jxl_e9"] - ours["decode_s"] / e9["decode_s"]) < 1e-9
    assert "| codec | threads |" in (tmp_path / "s.md").read_text()


def test_speed_bench_times_lossy_processes_beside_webp_and_jpegxl(model_path, tmp_path):
    from bench import speed
    speed.main(["--images", "1", "--crop", "64", "--threads", "1", "--models", model_path,
                "--lossy-beta", "100", "--out", str(tmp_path), "--name", "s"])
    out = json.loads((tmp_path / "s.json").read_text())
    rows = out["lossy_rows"]
    assert {r["codec"] for r in rows} == {"vlaecodec:lossy@100", "webp-q80-m6", "jpegxl-d1-e7"}
    assert all(r["bpp"] > 0 and r["psnr"] > 20 and r["encode_s"] > 0 and r["decode_s"] > 0 for r in rows)
    ours = next(s for s in out["lossy_summary"] if s["codec"].startswith("vlaecodec"))
    assert ours["peak_rss_mb"] > 10
    lossless = next(r for r in out["rows"] if r["codec"] == f"vlaecodec:{model_path}")
    assert ours["lossless_decode_x"] == {model_path: pytest.approx(lossless["decode_s"] / ours["decode_s"])}
    assert "| bits/pixel | PSNR dB |" in (tmp_path / "s.md").read_text()


def test_effort_rows_name_the_chosen_models(rng):
    from bench.__main__ import bench_effort
    images = [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), np.full((9, 8, 3), 7, np.uint8)]
    row = bench_effort("default", 2, "tiny", images)
    assert row["exact"] and row["n"] == 2 and row["bpd"] > 0
    assert sum(row["models_chosen"].values()) == 2 and set(row["models_chosen"]) <= {"default", "fast"}


def test_latent_ceiling_rises_with_the_numbers_kept():
    from bench.latent_ceiling import blocks, ceiling_psnr
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64, 3)) * 40 + np.linspace(0, 200, 64)[:, None, None]).astype(np.uint8)
    x = blocks([img])
    assert x.shape == (16, 768)
    psnr = ceiling_psnr(x, [1, 4, 8])
    assert psnr[1] < psnr[4] < psnr[8]
