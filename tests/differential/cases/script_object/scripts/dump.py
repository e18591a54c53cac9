import json
import sys

with open(snakemake.log[0], "w") as log:
    print("logging from the script", file=log)

data = {
    "input": list(snakemake.input),
    "input_names": dict(snakemake.input.items()),
    "output": list(snakemake.output),
    "params": {k: v for k, v in snakemake.params.items()},
    "wildcards": dict(snakemake.wildcards.items()),
    "threads": snakemake.threads,
    "resources": {k: v for k, v in snakemake.resources.items()},
    "log": list(snakemake.log),
    "config": snakemake.config,
    "rule": snakemake.rule,
    "scriptdir": snakemake.scriptdir,
    "argv0_is_python": sys.executable is not None,
}
with open(snakemake.output.main, "w") as out:
    json.dump(data, out, indent=1, sort_keys=True, default=str)
    out.write("\n")
