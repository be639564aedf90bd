"""Thin command line: parse, load and validate the recipe, call one stage. Nothing else."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import math
import sys
from pathlib import Path

from nortune.config import ConfigError, load_recipe
from nortune.errors import NativeCrash, NortuneError, StageFailed, UsageError
from nortune.jsonl import DataError
from nortune.runner import run_guarded, run_stage
from nortune.runs import Options, RunLayout


def _recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML, e.g. configs/demo.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value",
                        help="dotted overrides applied before validation, e.g. train.lr=1e-5 (anywhere on the line)")


def _positive(text: str) -> int:
    """argparse type: an integer of at least 1 (``--gpus 0`` or ``--limit 0`` would silently mean 'all')."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _temperature(text: str) -> float:
    """argparse type: a finite sampling temperature of at least 0 (nan or -3 would reach llama.cpp unchecked)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0 (0: greedy), got {text}")
    return value


def _exit_status(command: str, results: list[dict], recipe, args: argparse.Namespace,
                 contamination_accepted: bool = False, next_line: str | None = None, after: str | None = None) -> int:
    """1 when ``pipeline.problems`` finds any (each printed as one line), else 0: the one rule for every command;
    then the ``next:`` line (``pipeline.next_step``) every stage command ends with."""
    from nortune.pipeline import next_step, problems

    current = frozenset(r["stage"] for r in results if r.get("action") in ("run", "skip"))
    found = problems(results, recipe, contamination_accepted)
    for line in found:
        print(f"nortune {command}: {line}", file=sys.stderr)
    print(next_line or next_step(recipe, args.recipe, list(args.overrides), bool(found), command, after, current),
          file=sys.stderr)
    return 1 if found else 0


def cmd_config(args: argparse.Namespace) -> int:
    from nortune.plan import check_adapter

    recipe = load_recipe(args.recipe, args.overrides)
    check_adapter(recipe)  # against the model's config.json when it is on disk
    print(recipe.to_yaml(), end="")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from nortune import plan
    from nortune.plan import format_plan, plan_from_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.model is None and not args.json:  # the stage: writes <run>/plan/ and prints the plan
        run_stage(plan.STAGE, recipe, Options(force=args.force), "plan")
        print(RunLayout.of(recipe).plan_dir.joinpath("plan.txt").read_text(encoding="utf-8"), end="")
        return _exit_status("plan", [], recipe, args, after="plan")
    # A what-if for another model, or JSON on stdout: printed only, the run folder is left alone.
    planned = plan_from_recipe(recipe, model=args.model)
    print(json.dumps(planned.to_json(), indent=2) if args.json else format_plan(planned))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    if args.gpus * args.nodes > 1:
        from nortune.train.launch import launch_command, run_launched

        command = launch_command(recipe, args.recipe, args.overrides, gpus=args.gpus,
                                 resume=args.resume, allow_contaminated=args.allow_contaminated,
                                 nodes=args.nodes, node_rank=args.node_rank, main_address=args.main_address)
        if args.node_rank > 0:  # rank 0's machine holds the run folder; this node only trains
            return run_launched(recipe, command)
        launched = run_guarded("train", recipe, lambda: run_launched(recipe, command), "train")
        return launched or _exit_status("train", [], recipe, args, after="train")
    from nortune import ranks, train

    result = run_stage(train.STAGE, recipe, Options(resume=args.resume, allow_contaminated=args.allow_contaminated),
                       "train").manifest
    if not ranks.is_main():  # a launched process: the launching one prints the result
        return 0
    print(json.dumps(result.get("metrics", {}), indent=2))
    return _exit_status("train", [], recipe, args, after="train")


def cmd_preference(args: argparse.Namespace) -> int:
    from nortune import preference

    recipe = load_recipe(args.recipe, args.overrides)
    if not recipe.preference.configured:
        raise UsageError(f"{args.recipe}: no preference data configured (set preference.data, "
                         "preference.hf_dataset or preference.synthetic.enabled)")
    result = run_stage(preference.STAGE, recipe, Options(allow_contaminated=args.allow_contaminated),
                       "preference").manifest
    print(json.dumps(result.get("metrics", {}), indent=2))
    return _exit_status("preference", [], recipe, args, after="preference")


def cmd_decontam(args: argparse.Namespace) -> int:
    from nortune import decontam
    from nortune.pipeline import result_line

    overrides = list(args.overrides) + ([f"decontam.data={Path(args.data).resolve()}"] if args.data else []) \
        + (["decontam.write_clean=true"] if args.clean else [])
    recipe = load_recipe(args.recipe, overrides)
    outcome = run_stage(decontam.STAGE, recipe, Options(force=args.force), "decontam")
    print(json.dumps(outcome.manifest.get("metrics", {}), indent=2))
    print(f"report: {RunLayout.of(recipe).decontam_dir() / 'summary.md'}")
    return _exit_status("decontam", [result_line(decontam.STAGE.name, outcome)], recipe, args, after="decontam")


def cmd_curate(args: argparse.Namespace) -> int:
    from nortune import curate

    overrides = list(args.overrides)
    if args.strict:
        overrides.append("curate.strict=true")
    if args.allow_shortfall:
        overrides.append("curate.allow_shortfall=true")
    recipe = load_recipe(args.recipe, overrides)
    result = run_stage(curate.STAGE, recipe, Options(force=args.force), "curate").manifest
    print(json.dumps(result.get("metrics", {}), indent=2))
    for note in result.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    return _exit_status("curate", [], recipe, args, after="curate")


def cmd_langid(args: argparse.Namespace) -> int:
    from nortune.cli_checks import existing_file, line_texts
    from nortune.curate.langid import default_model

    name = "<stdin>" if args.file == "-" else args.file
    handle = sys.stdin.buffer if args.file == "-" else open(existing_file(Path(args.file), "a text file"), "rb")
    model = default_model()
    with handle:
        for text in line_texts(handle, name, args.field):
            sys.stdout.write("%s\t%.4f\n" % model.predict(text))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nortune import evaluate
    from nortune.evaluate.card import require_card
    from nortune.evaluate.compare import load_results, regression_banner
    from nortune.evaluate.perplexity import forgetting_banner
    from nortune.pipeline import result_line

    overrides = list(args.overrides) + ([f"evaluate.limit={args.limit}"] if args.limit is not None else [])
    recipe = load_recipe(args.recipe, overrides)
    if args.smoke:  # its own run folder, so that nothing it writes is taken for the run's evaluation
        if args.model not in (None, "base"):
            raise UsageError("--smoke evaluates the base model (in its own run folder <name>-smoke); "
                             "leave out --model, or give --model base")
        args.model = "base"
        overrides += [f"name={recipe.name}-smoke", "evaluate.smoke=true", "evaluate.num_fewshot={}",
                      "evaluate.perplexity=null"] + ([] if args.limit is not None else ["evaluate.limit=2"])
        recipe = load_recipe(args.recipe, overrides)
    if args.compare:  # a missing, malformed or card-less baseline fails now, not after the evaluation
        baseline_summary, _ = load_results(Path(args.compare))
        require_card(args.compare, baseline_summary.get("card"), args.force_compare, "--force-compare")
    layout = RunLayout.of(recipe)
    has_train = (layout.model_dir("train") / "manifest.json").is_file()
    labels = {"base": ["base"], "tuned": ["tuned"], "both": ["base", "tuned"]}[
        args.model or ("both" if has_train else "base")]
    results = []
    for label in labels:
        baseline = Path(args.compare) if args.compare and label == labels[-1] else None
        stage = evaluate.stage_for(label, baseline, args.force_compare)
        outcome = run_stage(stage, recipe, Options(force=args.force), "evaluate")
        manifest = outcome.manifest
        results.append(result_line(stage.name, outcome))
        print(json.dumps({label: manifest.get("metrics", {})}, indent=2))
        print(f"report: {layout.evaluate_dir(label) / 'report.md'}")
        compared = layout.compare_dir(label)
        if "comparison" in manifest:
            print(f"comparison: {manifest['comparison']}")
            comparison = json.loads((compared / "compare.json").read_text(encoding="utf-8"))
            for line in [*(f"nortune: {forced}" for forced in comparison["forced"]), *regression_banner(comparison)]:
                print(line, file=sys.stderr)
        if "perplexity_comparison" in manifest:
            print(f"held-out perplexity: {manifest['perplexity_comparison']}")
            for line in forgetting_banner(json.loads((compared / "perplexity.json").read_text(encoding="utf-8"))):
                print(line, file=sys.stderr)
    from nortune.pipeline import command_line

    again = command_line(args.recipe, args.overrides)
    smoke = f"next: the smoke test ran; `nortune run {again}` for the run itself" if args.smoke else None
    return _exit_status("evaluate", results, recipe, args, next_line=smoke, after=results[-1]["stage"])


def cmd_run(args: argparse.Namespace) -> int:
    from nortune.pipeline import STAGES, run_pipeline

    only = [name.strip() for name in args.only.split(",")] if args.only else None
    if only and (args.start or args.stop):
        raise UsageError("give --only, or --from/--to, not both")
    names = [s.name for s in STAGES]
    for name in [args.start, args.stop, *(only or [])]:
        if name is not None and name not in names:
            close = difflib.get_close_matches(name, names, 1)
            raise UsageError(f"unknown stage {name!r}" + (f" (did you mean {close[0]}?)" if close else "")
                             + f"; stages: {', '.join(names)}")
    recipe = load_recipe(args.recipe, args.overrides)
    results = run_pipeline(recipe, start=args.start, stop=args.stop, only=only, dry_run=args.dry_run,
                           options=Options(allow_contaminated=args.allow_contaminated, resume=args.resume))
    if args.dry_run:
        for r in results:
            print(f"{r['stage']:<20} {'would ' + r['action'] if r['action'] != 'off' else 'off':<11} {r['why']}")
    if args.dry_run:
        return 0
    return _exit_status("run", results, recipe, args, contamination_accepted=bool(args.allow_contaminated))


def cmd_export(args: argparse.Namespace) -> int:
    from nortune import export
    from nortune.pipeline import result_line

    recipe = load_recipe(args.recipe, args.overrides)
    outcome = run_stage(export.STAGE, recipe, Options(force=args.force), "export")
    out_dir = RunLayout.of(recipe).export_dir
    print((out_dir / "verification.md").read_text(encoding="utf-8"), end="")
    print(f"export: {out_dir} (model card README.md, Modelfile, verification.md)")
    return _exit_status("export", [result_line(export.STAGE.name, outcome)], recipe, args, after="export")


def cmd_chat(args: argparse.Namespace) -> int:
    from nortune.cli_checks import gguf_file
    from nortune.export.chat import chat
    from nortune.export.toolchain import ensure

    path = gguf_file(Path(args.gguf))
    ensure(install=False)  # the bindings this machine's build needs, or one line saying how to set them up
    return chat(path, system=args.system, max_tokens=args.max_tokens,
                temperature=args.temperature, n_ctx=args.ctx)


def cmd_report(args: argparse.Namespace) -> int:
    from nortune import report
    from nortune.cli_checks import finished_stages

    recipe = load_recipe(args.recipe, args.overrides)
    if not [p for p in finished_stages(recipe.run_dir) if p.name != "report"]:
        raise UsageError(f"{recipe.run_dir}: no stage of this run has finished, so there is nothing to report; "
                         f"run `nortune run {args.recipe}` first")
    run_stage(report.STAGE, recipe, Options(), "report")
    print(f"report: {RunLayout.of(recipe).report_page}")
    return _exit_status("report", [], recipe, args, after="report")


def cmd_runs(args: argparse.Namespace) -> int:
    from nortune.report.ledger import find_runs, format_runs, summarize

    if args.runs_dir is not None and not Path(args.runs_dir).is_dir():  # a named folder must exist
        raise UsageError(f"{args.runs_dir}: no such folder (runs are in <runs_dir>/<name>; default runs/)")
    args.runs_dir = args.runs_dir or "runs"
    summaries = [summarize(run_dir) for run_dir in find_runs(Path(args.runs_dir))]
    if args.json:
        print(json.dumps([s.to_json() for s in summaries], indent=2))
    else:
        print(format_runs(summaries) if summaries else f"no runs in {args.runs_dir}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from nortune.cli_checks import run_folder
    from nortune.report.ledger import compare_runs

    table = compare_runs([run_folder(Path(r)) for r in args.runs], force=args.force)
    print(table)
    if args.html:  # run names and every cell are escaped in the table; the page runs no script (its CSP)
        from nortune.report.stage import standalone_page
        from nortune.runs import atomic_write_text

        atomic_write_text(Path(args.html), standalone_page("nortune compare", table))
        print(f"html: {args.html}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nortune", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (also after the subcommand)")
    sub = parser.add_subparsers(dest="command", required=True)

    config = sub.add_parser("config", help="inspect a recipe")
    config_sub = config.add_subparsers(dest="action", required=True)
    show = config_sub.add_parser("show", help="print the resolved, validated recipe")
    _recipe_args(show)
    show.set_defaults(func=cmd_config)

    plan = sub.add_parser("plan", help="adapter plan and memory estimate from the model config alone")
    _recipe_args(plan)
    plan.add_argument("--model", help="plan another model: local folder, config.json, GGUF or hub id "
                                      "(printed only; writes no plan/ folder)")
    plan.add_argument("--json", action="store_true", help="print one JSON object (writes no plan/ folder)")
    plan.add_argument("--force", action="store_true", help="rerun even when nothing changed")
    plan.set_defaults(func=cmd_plan)

    train = sub.add_parser("train", help="PiSSA LoRA SFT on the selected layers")
    _recipe_args(train)
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument("--gpus", type=_positive, default=1, help="N > 1 launches through accelerate (per node)")
    train.add_argument("--nodes", type=_positive, default=1, help="machines taking part (accelerate --num_machines)")
    train.add_argument("--node-rank", type=int, default=0, help="this machine's index, 0 on rank 0's machine")
    train.add_argument("--main-address", metavar="HOST:PORT", help="rank 0's machine, needed with --nodes > 1")
    train.add_argument("--allow-contaminated", metavar="REASON",
                       help="train despite a failing contamination gate; the reason is recorded")
    train.set_defaults(func=cmd_train)

    preference = sub.add_parser("preference", help="IPO/DPO on top of the finished SFT run (preference.*)")
    _recipe_args(preference)
    preference.add_argument("--allow-contaminated", metavar="REASON",
                            help="train despite a failing contamination gate of the pairs; the reason is recorded")
    preference.set_defaults(func=cmd_preference)

    pipeline = sub.add_parser("run", help="the whole pipeline; stages whose manifest matches are skipped")
    _recipe_args(pipeline)
    pipeline.add_argument("--from", dest="start", metavar="STAGE", help="first stage to consider")
    pipeline.add_argument("--to", dest="stop", metavar="STAGE", help="last stage to consider")
    pipeline.add_argument("--only", metavar="STAGE[,STAGE]", help="just these stages")
    pipeline.add_argument("--dry-run", action="store_true", help="say what would run and why; run nothing")
    pipeline.add_argument("--resume", action="store_true", help="let the train stage continue a killed run")
    pipeline.add_argument("--allow-contaminated", metavar="REASON",
                          help="train despite a failing contamination gate; the reason is recorded")
    pipeline.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="write the run's self-contained HTML report and Markdown summary")
    _recipe_args(report)
    report.set_defaults(func=cmd_report)

    runs = sub.add_parser("runs", help="list runs: recipe, model, data, contamination, NorEval, export")
    runs.add_argument("runs_dir", nargs="?", help="folder holding the runs (default: runs; may not exist yet)")
    runs.add_argument("--json", action="store_true", help="print one JSON list instead of the table")
    runs.set_defaults(func=cmd_runs)

    compare = sub.add_parser("compare", help="runs side by side per NorEval task, with paired significance")
    compare.add_argument("runs", nargs="+", help="run folders, e.g. runs/demo runs/other")
    compare.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")
    compare.add_argument("--force", action="store_true",
                         help="compare even when the eval cards differ (the output then says so)")
    compare.set_defaults(func=cmd_compare)
    decontam = sub.add_parser("decontam", help="check training data against the benchmark test texts")
    _recipe_args(decontam)
    decontam.add_argument("--data", help="training file to check (default: decontam.data, then train.data)")
    decontam.add_argument("--clean", action="store_true", help="also write the file without contaminated records")
    decontam.add_argument("--force", action="store_true", help="rerun even when inputs and settings are unchanged")
    decontam.set_defaults(func=cmd_decontam)

    curate = sub.add_parser("curate", help="build the training set with an exact language mix")
    _recipe_args(curate)
    curate.add_argument("--strict", action="store_true", help="any malformed record is fatal")
    curate.add_argument("--allow-shortfall", action="store_true",
                        help="infeasible mix: write the closest feasible one (and say so)")
    curate.add_argument("--force", action="store_true", help="rerun even if nothing changed")
    curate.set_defaults(func=cmd_curate)

    evaluate = sub.add_parser("evaluate", help="NorEval (lm-eval noreval tasks, p0..p4) on base and/or tuned")
    _recipe_args(evaluate)
    evaluate.add_argument("--model", choices=["base", "tuned", "both"],
                          help="which model (default: both when the train stage has finished, else base)")
    evaluate.add_argument("--compare", metavar="BASE_RESULTS",
                          help="results.json (or its folder) of the baseline: paired bootstrap deltas")
    evaluate.add_argument("--limit", type=_positive, help="items per task, at least 1 (smoke runs only)")
    evaluate.add_argument("--smoke", action="store_true",
                          help="a smoke test: the base model on every task, 2 items (or --limit) and 0 shots, in "
                               "the run folder <name>-smoke; says it is one and draws no verdict")
    evaluate.add_argument("--force", action="store_true", help="rerun even when nothing changed")
    evaluate.add_argument("--force-compare", action="store_true",
                          help="compare even when the eval cards differ (compare.md then says so)")
    evaluate.set_defaults(func=cmd_evaluate)

    langid = sub.add_parser("langid", help="label each line nb/nn/en/other: TSV label<TAB>confidence")
    langid.add_argument("file", help="plain text, one record per line (or JSONL with --field); - for stdin")
    langid.add_argument("--field", help="read JSONL and identify this field (text or chat messages)")
    langid.set_defaults(func=cmd_langid)
    export = sub.add_parser("export", help="merged model, GGUF files verified in llama.cpp, Modelfile, model card")
    _recipe_args(export)
    export.add_argument("--force", action="store_true", help="rerun even when nothing changed")
    export.set_defaults(func=cmd_export)

    chat = sub.add_parser("chat", help="talk to a GGUF file through llama.cpp (empty line ends)")
    chat.add_argument("gguf", help="a .gguf file, e.g. runs/demo/export/demo-Q4_K_M.gguf")
    chat.add_argument("--system", help="system message")
    chat.add_argument("--max-tokens", type=_positive, default=512, help="longest answer, in tokens")
    chat.add_argument("--temperature", type=_temperature, default=0.7, help="sampling temperature (0: greedy)")
    chat.add_argument("--ctx", type=_positive, default=4096, help="context length")
    chat.set_defaults(func=cmd_chat)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, accepting ``key.path=value`` overrides anywhere on the line (also after an option)."""
    args, extra = parser.parse_known_args(argv)
    if {"-v", "--verbose"} & set(extra):  # -v after the subcommand means the same as before it
        args.verbose = True
        extra = [item for item in extra if item not in ("-v", "--verbose")]
    overrides = [item for item in extra if "=" in item and not item.startswith("-")]
    unknown = [item for item in extra if item not in overrides]
    if overrides and not hasattr(args, "overrides"):
        unknown += overrides
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if overrides:
        args.overrides = list(args.overrides) + overrides
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user's mistake is one line, ``nortune: <message>``, exit 2; a bug keeps its traceback."""
    from nortune import children

    children.install()  # SIGTERM/SIGINT end nortune and its children in order; a kill -9 ends them too
    args = _parse(build_parser(), argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ConfigError as exc:
        text = str(exc)  # one line for one problem; several are listed under the heading, one a line
        sep = "\n" if "\n" in text else " "
        print(f"nortune: config error:{sep}{text}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"nortune: data error: {exc}", file=sys.stderr)
        return 2
    except NortuneError as exc:  # every other user mistake: the message names the file, line or key
        print(f"nortune: {exc}", file=sys.stderr)
        return 2
    except (StageFailed, NativeCrash) as exc:  # a stage's folder holds failed.json; the report shows it in red
        print(f"nortune: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (errors.Interrupted); runner.run_stage recorded the stage
        print(f"nortune: {exc or 'interrupted'}; the stage it stopped has no manifest, rerun to continue",
              file=sys.stderr)
        return getattr(exc, "code", None) or 130


if __name__ == "__main__":
    sys.exit(main())
