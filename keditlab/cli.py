"""The ``keditlab`` command.

    keditlab run SPEC [--out DIR]     validate, edit, evaluate, save a run folder, print the table
    keditlab trace SPEC [--out DIR]   run the spec's trace: section (causal tracing), save heatmaps and JSON
    keditlab train SPEC [--out DIR]   train the editor of the spec's train: section (MEND) and cache its archive
    keditlab train --resume FOLDER    continue a training that stopped, from its last checkpoint
    keditlab sweep SPEC [--executor ray]  run every cell of the spec's sweep: grid, one run folder each, one merged table
    keditlab sweep --resume FOLDER    run the cells of a sweep that are not complete
    keditlab plan SPEC [--gpu-memory 16GiB]  what each method changes and needs (statistics, peak memory), no weights loaded
    keditlab validate FILE...         check specs without running them (exit 1 on any error)
    keditlab show FOLDER              print the tables of a saved run or sweep (method x dataset x metric x protocol)
    keditlab methods                  list the editing methods, what each can do, and their settings
    keditlab --version                print the installed version

Mistakes a user can make (a bad spec, a model that cannot be loaded, a corpus
that cannot be read) end with one readable message and a non-zero exit code,
never a traceback.  Set ``KEDITLAB_DEBUG=1`` to see the traceback anyway.
Output piped into a command that stops reading early (``keditlab methods |
head``) ends quietly, with exit code 141 like other Unix tools cut off by a
closed pipe.

The commands that need no model (``validate``, ``show``, ``methods``,
``--version``) never import torch, so they answer at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

EXIT_BAD_SPEC = 2
EXIT_FAILED = 1
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command cut off by a closed pipe


def main(argv: list[str] | None = None) -> int:
    from keditlab import __version__

    parser = argparse.ArgumentParser(prog="keditlab", description="Knowledge editing of language models, driven by YAML specs.")
    parser.add_argument("--version", action="version", version=f"keditlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a spec and save its results in a new run folder")
    run.add_argument("spec", nargs="?", help="path of a YAML spec (not with --resume)")
    run.add_argument("--out", default=None, help="folder under which the run folder is created (default: run.out from the spec, else ./runs)")
    run.add_argument("--resume", metavar="RUN_FOLDER", default=None,
                     help="continue a run that stopped (killed, interrupted, failed) in its own folder, skipping the edits it finished")
    trace = commands.add_parser("trace", help="run a spec's trace: section (causal tracing) and save heatmaps and JSON in a new run folder")
    trace.add_argument("spec", help="path of a YAML spec with a trace: section")
    trace.add_argument("--out", default=None, help="folder under which the run folder is created (default: run.out from the spec, else ./runs)")
    train = commands.add_parser("train", help="train the editor a spec's train: section names (MEND) and put its archive in the cache")
    train.add_argument("spec", nargs="?", help="path of a YAML spec with a train: section (not with --resume)")
    train.add_argument("--out", default=None, help="folder under which the training folder is created (default: run.out from the spec, else ./runs)")
    train.add_argument("--resume", metavar="TRAIN_FOLDER", default=None,
                       help="continue a training that stopped (killed, interrupted) from its last checkpoint")
    sweep = commands.add_parser("sweep", help="run every cell of a spec's sweep: section into a sweep folder, with one merged table")
    sweep.add_argument("spec", nargs="?", help="path of a YAML spec with a sweep: section (not with --resume)")
    sweep.add_argument("--out", default=None, help="folder under which the sweep folder is created (default: run.out from the spec, else ./runs)")
    sweep.add_argument("--resume", metavar="SWEEP_FOLDER", default=None, help="run the cells of a sweep that are not complete")
    sweep.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="local: cells one after another in this process (default); ray: each cell a Ray task")
    sweep.add_argument("--address", default=None,
                       help="with --executor ray: the cluster (auto: the one on this machine; ray://host:10001); default: start a local one")
    sweep.add_argument("--gpus-per-cell", type=float, default=1.0,
                       help="with --executor ray: GPUs a CUDA cell asks for (0.5 puts two small-model cells on one GPU)")
    plan = commands.add_parser("plan", help="estimate what each method changes and needs (statistics, peak memory) from the model's config, without loading weights")
    plan.add_argument("spec", help="path of a YAML spec")
    plan.add_argument("--gpu-memory", default=None, help="GPU memory to compare with, e.g. 16GiB (Colab's T4), 16GB, 15360MiB; default: the spec's device")
    export = commands.add_parser("export", help="write the model a run's method made (saved with run.save_edits) as a transformers folder")
    export.add_argument("run_folder", metavar="RUN", help="the run folder")
    export.add_argument("--method", required=True, help="the method (its label in the run) whose edits to write")
    export.add_argument("--out", required=True, help="a new folder for the model (never overwritten)")
    export.add_argument("--call", type=int, default=None, help="single/batch runs: which saved call (its number in call-NNNN)")
    export.add_argument("--case", default=None, help="single/batch runs: the call that made this edit (a case id)")
    validate = commands.add_parser("validate", help="check specs without running them")
    validate.add_argument("files", nargs="+", help="YAML specs to check")
    show = commands.add_parser("show", help="print the results table of a saved run folder")
    show.add_argument("folder")
    commands.add_parser("methods", help="list the editing methods, what each can do (run modes), and their settings")
    args = parser.parse_args(argv)
    handler = {"run": _run, "sweep": _sweep, "trace": _trace, "train": _train, "plan": _plan, "validate": _validate, "show": _show, "methods": _methods,
               "export": _export}[args.command]
    try:
        code = handler(args)
        sys.stdout.flush()  # a reader that went away shows up here, inside the try, not at exit
        return code
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the point is one readable line instead of a traceback
        if os.environ.get("KEDITLAB_DEBUG"):
            raise
        from keditlab.spec import SpecValidationError

        if isinstance(exc, SpecValidationError):
            print(str(exc), file=sys.stderr)
            return EXIT_BAD_SPEC
        print(f"keditlab {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush cannot hit the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (a notebook, a test)
        pass


def _spec_or_resume(args: argparse.Namespace, command: str, folder: str, metavar: str) -> bool:
    """True when ``command`` was given a spec or ``--resume`` (one, and no ``--out`` with ``--resume``); else says so."""
    if (args.spec is None) != (args.resume is None) and not (args.resume and args.out):
        return True
    kind = folder.split()[0]
    print(f"keditlab {command}: error: give a spec (keditlab {command} SPEC) or a {folder} to continue (keditlab "
          f"{command} --resume {metavar}), not both" + (f" and not --out: a resumed {kind} stays in its folder"
                                                         if args.out else "") + ".", file=sys.stderr)
    return False


def _validate(args: argparse.Namespace) -> int:
    from keditlab.data.download import deferred_downloads
    from keditlab.models import peek_num_layers
    from keditlab.models.peek import peek_config
    from keditlab.spec import validate_file

    bad = 0
    for file in args.files:
        with deferred_downloads() as pending:  # validation downloads nothing: a file a run will fetch is a note
            errors = validate_file(file, num_layers_of=peek_num_layers, model_config_of=peek_config)
        if errors:
            bad += 1
            for error in errors:
                print(error, file=sys.stderr)
        else:
            print(f"{file}: ok")
            for note in pending:
                print(f"{file}: note: {note}")
    return EXIT_BAD_SPEC if bad else 0


def _run(args: argparse.Namespace) -> int:
    import keditlab

    if not _spec_or_resume(args, "run", "run folder", "RUN_FOLDER"):
        return EXIT_BAD_SPEC
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    # `kill PID` (SIGTERM, also what a notebook server or a batch queue sends) stops the run the way Ctrl-C does: the
    # run folder then says `interrupted` and keeps what was measured (docs/reliability.md)
    if args.resume:
        from keditlab.runner.resume import read_run_folder, resume_run

        read_run_folder(args.resume)  # a folder that cannot be resumed fails before anything heavy loads
        signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
        result = resume_run(args.resume, log=log)
    else:
        spec = keditlab.load(Path(args.spec))  # validation errors surface before anything heavy loads
        from keditlab.runner import run_spec

        signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
        result = run_spec(spec, args.out or spec.run.out or "runs", log=log)
    print(result)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    if not _spec_or_resume(args, "sweep", "sweep folder", "SWEEP_FOLDER"):
        return EXIT_BAD_SPEC
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    settings = {"executor": args.executor, "address": args.address, "gpus_per_cell": args.gpus_per_cell, "log": log}
    if args.resume:
        from keditlab.runner.sweep_result import read_sweep
        from keditlab.runner.sweep_run import resume_sweep

        read_sweep(args.resume)  # a folder that is not a sweep fails before anything heavy loads
        signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
        result = resume_sweep(args.resume, **settings)
    else:
        from keditlab import load_sweep

        sweep = load_sweep(args.spec)  # every cell is validated (its model's layers too) before anything runs
        from keditlab.runner.sweep_run import sweep_spec

        signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
        result = sweep_spec(sweep, args.out or sweep.specs[0].run.out or "runs", **settings)
    print(result)
    return 0 if result.status == "complete" else EXIT_FAILED


def _trace(args: argparse.Namespace) -> int:
    import keditlab

    spec = keditlab.load(Path(args.spec))
    if spec.trace is None:
        print(f"keditlab trace: error: {args.spec} has no `trace:` section. Fix: add one (docs/tracing.md), "
              "or run its edits with `keditlab run`.", file=sys.stderr)
        return EXIT_BAD_SPEC
    from keditlab.runner import trace_spec

    out = args.out or spec.run.out or "runs"
    result = trace_spec(spec, out, log=lambda message: print(message, file=sys.stderr, flush=True))
    print(result)
    return 0


def _train(args: argparse.Namespace) -> int:
    import keditlab

    if not _spec_or_resume(args, "train", "training folder", "FOLDER"):
        return EXIT_BAD_SPEC
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    if args.resume:
        from keditlab.runner.train_run import resume_training

        signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
        result = resume_training(args.resume, log=log)
    else:
        spec = keditlab.load(Path(args.spec))  # validation errors surface before anything heavy loads
        if spec.train is None:
            print(f"keditlab train: error: {args.spec} has no `train:` section. Fix: add one (docs/training.md), "
                  "or run its edits with `keditlab run`.", file=sys.stderr)
            return EXIT_BAD_SPEC
        from keditlab.runner.train_run import train_spec

        signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
        result = train_spec(spec, args.out or spec.run.out or "runs", log=log)
    print(result)
    return 0


def _plan(args: argparse.Namespace) -> int:
    import keditlab
    from keditlab.runner.plan import parse_memory

    gpu_memory = parse_memory(args.gpu_memory) if args.gpu_memory is not None else None  # a bad size fails before any work
    spec = keditlab.load(Path(args.spec))  # validation errors exit 2, as for validate and run
    from keditlab.runner.plan import plan_spec

    print(plan_spec(spec, gpu_memory))
    return 0


def _export(args: argparse.Namespace) -> int:
    from keditlab.runner.export import export_run

    out = export_run(args.run_folder, args.method, args.out, call=args.call, case=args.case,
                     log=lambda message: print(message, file=sys.stderr, flush=True))
    print(f"exported: {out} (AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0


def _show(args: argparse.Namespace) -> int:
    # Reading a run needs no model: result, render and table_files import no torch (tests/unit/test_cli.py checks).
    from keditlab.runner.result import load_run
    from keditlab.runner.sweep_result import SweepResult, is_sweep_folder
    from keditlab.runner.table_files import table_markdown

    if is_sweep_folder(args.folder):
        print(SweepResult.load(args.folder))
        return 0
    run = load_run(args.folder)
    print(run)
    print()
    print(table_markdown(run.summary), end="")  # method x dataset x metric, one column per protocol (table.md)
    return 0


def _methods(args: argparse.Namespace) -> int:
    # Read from the schema, which is generated from the method registry: the same
    # names, summaries, defaults and help, without importing the methods and torch.
    from keditlab.spec.schema import describe_capabilities, method_catalogue

    for method in method_catalogue():
        print(f"{method.name}: {method.summary}")
        print(f"    {describe_capabilities(method.capabilities)}")
        print(f"    family: {method.family}; paper: {method.paper}")
        for setting in method.settings:
            print(f"    {setting.name} = {setting.default!r}: {setting.help}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
