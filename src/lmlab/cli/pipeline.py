"""`lmlab pipeline RECIPE.yaml --out DIR`: argument parsing only; lmlab.pipeline does the work."""

from __future__ import annotations


def register(sub, common) -> None:
    from lmlab.pipeline.recipe import STAGES

    p = sub.add_parser(
        "pipeline", parents=[common], help="the lifecycle as one job: data, adapt, sft, preference, eval, package, serve",
        description="Run a recipe's stages (cached by config; a killed run resumes where it stopped) and write "
                    "DIR/report.html and DIR/report.json. Under torchrun the training stages run data-parallel.")
    p.add_argument("recipe", metavar="RECIPE.yaml")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (one recipe per folder)")
    p.add_argument("--from", dest="start_from", choices=STAGES, default=None,
                   help="re-run this stage and every stage after it, cached or not")
    p.add_argument("--overwrite", action="store_true", help="replace another recipe's run in DIR")
    p.add_argument("--serve", action="store_true", help="end with `lmlab serve` on the final model")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no pipeline progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any recipe key, e.g. stages.sft.max_steps=10")
    p.set_defaults(func=cmd_pipeline)


def cmd_pipeline(args) -> int:
    from lmlab.pipeline.recipe import load_recipe
    from lmlab.pipeline.runner import run_pipeline

    recipe = load_recipe(args.recipe, args.overrides)
    run_pipeline(recipe, args.out, start_from=args.start_from, overwrite=args.overwrite, serve=args.serve,
                 progress=args.progress)
    return 0
