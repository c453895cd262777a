"""The lifecycle as one job: data -> adapt -> SFT -> preference -> eval -> package -> serve,
cached and resumable, with one HTML report (`lmlab pipeline RECIPE.yaml --out DIR`)."""
