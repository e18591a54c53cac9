import os
import tempfile

with open(snakemake.output[0], "w") as out:
    print("resource", snakemake.resources.tmpdir, file=out)
    print("gettempdir equals", tempfile.gettempdir() == snakemake.resources.tmpdir, file=out)
    for name in ("TMPDIR", "TMP", "TEMP"):
        print(name, os.environ.get(name) == snakemake.resources.tmpdir, file=out)
