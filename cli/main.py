"""``vlaecodec``: train, eval, models, and the codec commands."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click



class CleanErrors(click.Group):
    """Turn expected failures into one-line errors with a non-zero exit, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("vlaecodec: interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - the CLI boundary: report, do not crash
            from vlaecodec.errors import describe
            click.echo(f"vlaecodec: error: {describe(e)}", err=True)
            sys.exit(1)


@click.group(cls=CleanErrors)
@click.version_option(package_name="vlaecodec")
def cli():
    """vlaecodec: a learned image codec (lossless, near-lossless, lossy) built on the Variational Lossy Autoencoder."""


@cli.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="JSON file with model and training settings (flags override it).")
@click.option("--data", help="cifar10 | cifar10+photos | cifar10+broad | broad | photos | mnist | bmnist | omniglot | a folder")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue exactly from RUN/checkpoint.safetensors.")
@click.option("--init", "init_from", help="Start from these weights (zoo name or .safetensors; the config must match).")
@click.option("--decoder", type=click.Choice(["local", "full", "factorized"]))
@click.option("--prior", type=click.Choice(["normal", "ar"]))
@click.option("--likelihood", type=click.Choice(["categorical", "logistic"]))
@click.option("--mixtures", type=int)
@click.option("--window", nargs=2, type=int, help="A B: window A pixels wide, B rows up.")
@click.option("--z-channels", type=int)
@click.option("--no-latent", "latent", is_flag=True, flag_value=False, default=None,
              help="No latent: z = 0, no encoder, no rate (a local model; files carry no z).")
@click.option("--hidden", type=int)
@click.option("--pixel-hidden", type=int)
@click.option("--res-blocks", type=int)
@click.option("--pixel-blocks", type=int)
@click.option("--beta", type=float)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--steps", type=int, help="Length of the learning-rate schedule (total steps).")
@click.option("--minutes", type=float, help="Stop this invocation after this many minutes.")
@click.option("--fit-minutes", type=float,
              help="Stop after this many minutes, with the schedule's length fitted to end then.")
@click.option("--loader-threads", type=int, help="Threads that prepare upcoming batches.")
@click.option("--ckpt-minutes", type=float, help="Checkpoint every this many minutes.")
@click.option("--stop-after", type=int, help="Stop this invocation after this many steps.")
@click.option("--photo-frac", type=float)
@click.option("--grey-frac", type=float)
@click.option("--limit", type=int, help="Use only the first N training images.")
@click.option("--cifar-parts", help="Comma-separated CIFAR-10 train mosaics to use, e.g. 0,1.")
@click.option("--teacher", help="Zoo model whose posterior q(z|x) the new model learns to match (distillation).")
@click.option("--distill", type=float, help="Weight of the teacher-matching term (default 1).")
@click.option("--distill-features", type=float,
              help="Weight of matching the teacher's pixel features (a model pruned from it; default 0).")
@click.option("--val-every", type=int)
@click.option("--warmup", type=int, help="Learning-rate warm-up steps.")
@click.option("--seed", type=int)
@click.option("--bf16", is_flag=True, default=None, help="bf16 autocast (always on for CUDA).")
@click.option("--device", help="cpu | cuda (default: cuda when available).")
@click.option("--threads", type=int, help="torch CPU threads.")
def train(config_file, run_dir, resume, init_from, device, threads, **flags):
    """Train a VLAE into a run folder (checkpoints and an exported model + card)."""
    import torch

    from vlaecodec.train import checkpoint_settings, run_config
    from vlaecodec.train import train as run_training
    if threads:
        torch.set_num_threads(threads)
    settings = json.loads(Path(config_file).read_text()) if config_file else {}
    run = Path(run_dir)
    if resume and not config_file:
        settings = checkpoint_settings(run) or settings
    if flags.get("window"):
        flags["window"] = list(flags["window"])
    if flags.get("cifar_parts"):
        flags["cifar_parts"] = [int(v) for v in flags["cifar_parts"].split(",")]
    settings.update({k: v for k, v in flags.items() if v is not None and v != ()})
    # with --init, the model's own architecture, unless a config file says otherwise
    cfg, s = run_config(settings, init_from if not config_file else None, flags)
    meta = run_training(cfg, s, run, resume=resume, device=device, init=init_from)
    click.echo(json.dumps({"run": str(run), "step": meta["step"], "train_seconds": meta["train_seconds"]}))


@cli.command("eval")
@click.option("--model", "model_name", default="default", show_default=True, help="Zoo name or .safetensors path.")
@click.option("--data", "dataset", default="cifar10-test", show_default=True,
              help="cifar10-test | kodak | bmnist-test | mnist-test | omniglot-test | a folder")
@click.option("--limit", type=int, help="Only the first N images.")
@click.option("--iw", "iw_samples", type=int, default=0, help="Also the importance-weighted bound with k samples.")
@click.option("--batch-size", type=int, default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--update-card", is_flag=True, help="Store the result in the model's card.")
def eval_cmd(model_name, dataset, limit, iw_samples, batch_size, seed, as_json, update_card):
    """Test-set -ELBO in bits/dim, split into distortion and rate."""
    import torch

    from vlaecodec import data as D
    from vlaecodec.evaluate import evaluate
    from vlaecodec.zoo import load_model, record_result
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, card = load_model(model_name)
    images = D.load_dataset(dataset, limit)
    if model.cfg.levels == 2 and not D.is_binary_dataset(dataset):
        raise click.ClickException(f"model {card['name']} is for binary images; use bmnist-test or omniglot-test")
    res = evaluate(model, images, batch_size=batch_size, iw_samples=iw_samples, seed=seed,
                   progress=not as_json)
    res = {"model": card["name"], "data": dataset, **res}
    if update_card:
        record_result(model_name, dataset + (f"[:{limit}]" if limit else ""), res,
                      "vlaecodec " + " ".join(sys.argv[1:]))
    if as_json:
        click.echo(json.dumps(res))
    else:
        for k, v in res.items():
            click.echo(f"{k:>28}: {v}")


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", help="Output file (one input), folder (several), or - for stdout.")
@click.option("--archive", is_flag=True, help="All inputs into one chained file (-o names it).")
@click.option("--model", "model_name", help="Zoo name or .safetensors path  [default: default]")
@click.option("--beta", type=float, help="With --lossy: the rate dial (D + beta R; higher: smaller file). "
              "Otherwise: use the zoo model trained at this beta (the beta family).")
@click.option("--target-bpp", type=float, help="With --lossy: find the beta whose file is closest to this many bits per pixel.")
@click.option("--max-error", type=click.IntRange(0, 64), default=0, show_default=True,
              help="Near-lossless: every decoded subpixel within this of the original (0 = lossless).")
@click.option("--lossy", is_flag=True,
              help="Lossy: the lossy model's latent and loop filter, at --beta or --target-bpp (with a VLAE "
                   "--model such as default or beta-0.5: 0.3's file holding z only).")
@click.option("--recon", type=click.Choice(["mean", "mode", "sample"]), default="mean", show_default=True,
              help="Lossy with a VLAE model (z only): how the decoder picks each subpixel from the PixelCNN.")
@click.option("--seed", type=int, default=0, show_default=True, help="Lossy with a VLAE model: seed of --recon sample.")
@click.option("--z-extra-bits", type=click.IntRange(-8, 8), default=0, show_default=True,
              help="Lossy with a VLAE model: finer (positive) or coarser latent bins than the posterior's width asks.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input on stdout.")
@click.option("--jobs", type=int, default=1, show_default=True, help="Parallel processes for many inputs.")
@click.option("--threads", type=int, default=None,
              help="Threads per process (default: the machine's cores, shared by the --jobs processes). "
                   "Files do not depend on it, but for lossy --effort 2's, whose float search may end a few "
                   "symbols apart.")
@click.option("--elbo/--no-elbo", default=False,
              help="Also report the model's -ELBO (elbo_bpd): a float pass over the image, which loads torch.")
@click.option("--effort", type=click.IntRange(1, 2), default=1, show_default=True,
              help="Lossless and near-lossless: 2 also codes with the zoo's other general model and keeps "
                   "the smaller file (about twice the encode time).  Lossy: 2 searches the image's latents "
                   "for a smaller file at the same quality (tens of seconds a photo).  Decoding is unchanged.")
@click.option("--strip", is_flag=True,
              help="Leave out the inputs' ICC profiles, EXIF and XMP (kept by default, and written back on decode).")
def encode(inputs, output, archive, model_name, beta, target_bpp, max_error, lossy, recon, seed, z_extra_bits,
           force, as_json, jobs, threads, elbo, effort, strip):
    """Encode images into .vlae files: lossless by default, near-lossless with --max-error,
    lossy with --lossy (the lossy model; --beta or --target-bpp set its rate)."""
    from cli import commands
    if lossy and max_error:
        raise click.UsageError("--lossy and --max-error exclude each other")
    if target_bpp is not None and not lossy:
        raise click.UsageError("--target-bpp needs --lossy")
    if lossy and beta is not None and target_bpp is not None:
        raise click.UsageError("give --beta or --target-bpp, not both")
    lossy_dial = lossy and (model_name is None or _is_lossy(model_name))
    if beta is not None and model_name and not lossy_dial:
        raise click.UsageError("give --model or --beta, not both")
    if beta is not None and not lossy_dial:
        from vlaecodec.zoo import model_for_beta
        model_name = model_for_beta(beta)
    if lossy_dial:
        model_name = model_name or "lossy"
    if lossy and not lossy_dial and effort != 1:
        raise click.UsageError("--effort with --lossy needs a lossy model (one with a beta dial)")
    opts = commands.EncodeOptions(max_error=max_error, lossy=lossy, recon=recon, seed=seed,
                                  extra_bits=z_extra_bits, beta=beta if lossy_dial else None,
                                  target_bpp=target_bpp, effort=effort, strip=strip)
    if commands.encode_command(list(inputs), output, archive, model_name or "default", force, as_json,
                               jobs, commands.threads_for(threads, jobs), elbo and not lossy_dial, opts):
        sys.exit(1)  # its one-line error is already printed


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", help="Output image (one input), folder (several or an archive), or - for stdout.")
@click.option("--model", "model_name", default="auto", show_default=True,
              help="auto: the zoo model whose id the file names.")
@click.option("--preview", is_flag=True, help="Decode the z layer only: the lossy picture, without the pixel bits.")
@click.option("--recon", type=click.Choice(["mean", "mode", "sample"]), default="mean", show_default=True,
              help="--preview: how each subpixel is picked from the PixelCNN.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--jobs", type=int, default=1, show_default=True)
@click.option("--threads", type=int, default=None,
              help="Threads per process (default: the machine's cores, shared by the --jobs processes); "
                   "the pixels do not depend on it.")
def decode(inputs, output, model_name, preview, recon, force, jobs, threads):
    """Decode .vlae files to PNG (lossless files bit-exact)."""
    from cli import commands
    if commands.decode_command(list(inputs), output, model_name, force, jobs, commands.threads_for(threads, jobs),
                               preview, recon):
        sys.exit(1)


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
def info(files, as_json):
    """Describe .vlae files (reads the header only; no model needed)."""
    from cli import commands
    if commands.info_command(list(files), as_json):
        sys.exit(1)


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("name")
@click.option("--active-threshold", type=float, default=0.01, show_default=True,
              help="Latent channels with less KL (bits per latent, on 1000 training images) are not coded.")
@click.option("--force", is_flag=True)
def export(run_dir, name, active_threshold, force):
    """Copy a run's model into the zoo (models/NAME) with its card and its active latent channels."""
    from vlaecodec.zoo import export as export_model
    click.echo(json.dumps(export_model(run_dir, name, active_threshold, force)))


@cli.command("models")
@click.option("--json", "as_json", is_flag=True)
def models_cmd(as_json):
    """List the model zoo."""
    from vlaecodec.zoo import list_models
    rows = []
    for c in list_models():
        results = c.get("results", {})
        test_set, main = next(iter(results.items()), (None, {}))
        rows.append({"name": c["name"], "kind": c.get("kind", "vlae"), "beta": c.get("beta"),
                     "lossy_betas": c.get("betas") if c.get("kind") == "lossy" else None,
                     "serves": ["lossy"] if c.get("kind") == "lossy" else
                               ["lossless", "near-lossless"] + (["lossy-z-only"] if c.get("config", {}).get("latent", True) else []),
                     "data": c.get("data"),
                     "window": c.get("window"), "decoder": c.get("decoder"),
                     "parameters": c.get("parameters"), "test_set": test_set,
                     "bpd": main.get("bpd"), "rate_bpd": main.get("rate_bpd"),
                     "distortion_bpd": main.get("distortion_bpd"), "results": results})
    if as_json:
        click.echo(json.dumps(rows))
    else:
        for r in rows:
            beta = (f"lossy, beta {min(r['lossy_betas']):g}..{max(r['lossy_betas']):g}" if r["lossy_betas"]
                    else f"beta={r['beta']}")
            click.echo(f"{r['name']:<20} {beta} data={r['data']} params={r['parameters']}")


def _is_lossy(model_name: str) -> bool:
    from vlaecodec.api import is_lossy
    return is_lossy(model_name)


@cli.command("train-lossy")
@click.option("--out", default="runs/lossy", show_default=True, help="Run folder (resumes from its checkpoint).")
@click.option("--n", type=int, default=96, show_default=True, help="Width of the transforms.")
@click.option("--m", type=int, default=128, show_default=True, help="Channels of the latent y.")
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--steps", type=int, default=0, help="Stop at this step (0: no limit).")
@click.option("--minutes", type=float, default=0.0, help="Stop this invocation after this many minutes.")
@click.option("--val-minutes", type=float, default=10.0, show_default=True, help="Validate (and keep the best) this often.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--init", default="", help="Start from these weights (.safetensors), fresh optimiser; a model "
              "with fewer latent channels than --m, or other betas, is widened to them.")
@click.option("--betas", default="", help="Trained betas, comma-separated (default: the model's).")
@click.option("--lr-final", type=float, default=0.0, help="With --minutes: lr falls to this along a cosine.")
@click.option("--warmup", type=int, default=0, help="Rates ramp up from 0 over this many steps (a fresh optimiser).")
@click.option("--context", type=int, default=0, help="Width of a checkerboard context network (grown at zero "
              "on a model without one).")
@click.option("--ctx-lr", type=float, default=10.0, show_default=True, help="The context network's rate, times lr.")
@click.option("--ckpt-minutes", type=float, default=5.0, show_default=True, help="Checkpoint this often.")
def train_lossy(out, n, m, lr, steps, minutes, val_minutes, threads, init, betas, lr_final, warmup, context,
                ctx_lr, ckpt_minutes):
    """Train the lossy (hyperprior) model: resumable, keeps the best held-out weights."""
    from vlaecodec.lossy_train import LossyTrainSettings, train
    train(LossyTrainSettings(out=out, n=n, m=m, lr=lr, steps=steps, minutes=minutes, val_minutes=val_minutes,
                             threads=threads, init=init, betas=betas, lr_final=lr_final, warmup=warmup,
                             context=context, ctx_lr=ctx_lr, ckpt_minutes=ckpt_minutes))


@cli.command("export-lossy")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("name")
@click.option("--force", is_flag=True, help="Replace a zoo model of that name.")
@click.option("--notes", default="", help="The card's notes.")
@click.option("--continues", "continues", default=None, metavar="MODEL",
              help="The zoo model the run started from: its card's training curve goes on with this run's.")
@click.option("--segment", default="", help="With --continues: this run's name in the training curve.")
@click.option("--segment-note", default="", help="With --continues: what this run did (lr, command).")
@click.option("--fit-tables", default=0, type=click.IntRange(min=0), metavar="CROPS",
              help="Fit y's tables, their per-beta channel shifts and z's per-beta tables to the symbols of "
                   "this many training crops (0: the model's own). Needs the training data.")
def export_lossy(run_dir, name, force, notes, continues, segment, segment_note, fit_tables):
    """Copy a lossy run's best weights into the zoo, with its integer tables and card."""
    from vlaecodec.lossy_train import export
    from vlaecodec.zoo import models_dir, read_card, resolve
    weights = models_dir() / f"{name}.safetensors"
    if weights.exists() and not force:
        raise click.UsageError(f"{weights} exists (use --force to replace it)")
    previous = None
    if continues:
        previous = read_card(resolve(continues))
        if "training_curve" not in previous or not segment:
            raise click.UsageError("--continues needs a model whose card has a training_curve, and --segment")
    card = export(run_dir, weights, name, notes, previous, segment, segment_note, fit_tables)
    click.echo(json.dumps({k: card[k] for k in ("name", "betas", "parameters", "training", "sha256")}))


# The commands that code images leave without Python's finalization once they are done (every
# output written and renamed, the streams flushed): tearing down numba's typing context and
# the kernels' compiled code took 0.4-0.6 s of every such process on the 2-core machine, a
# third of an 8x8 image's decode.  Training and the other commands exit as usual.
QUICK_EXIT = {"encode", "decode", "info"}


def leave(code) -> None:
    """Exit now with ``code`` (SystemExit's: None, an int, or a message for stderr)."""
    status = 0 if code is None else code if isinstance(code, int) else 1
    try:
        if isinstance(code, str):
            print(code, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:             # a reader that went away (a closed pipe): nothing to tell it
        status = status or 1
    os._exit(status)


def main():
    from cli import numba_startup
    numba_startup.install()
    try:
        cli()
    except SystemExit as e:
        if len(sys.argv) > 1 and sys.argv[1] in QUICK_EXIT:
            leave(e.code)
        raise


if __name__ == "__main__":
    main()
