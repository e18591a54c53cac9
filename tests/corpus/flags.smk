# Output flags: touch, directory, temp, protected, multiple outputs, ancient;
# Snakemake's bash strict mode (set -euo pipefail).
rule all:
    input:
        "final/summary.txt",
        "flags/touched.flag",
        "flags/protected.txt",
        "pipefail/checked.txt",


rule touched:
    output:
        touch("flags/touched.flag"),
    shell:
        "true"


rule directory_out:
    output:
        directory("dir/many"),
    shell:
        "mkdir -p {output} && for i in 1 2 3; do echo $i > {output}/$i.txt; done"


rule temporary:
    output:
        temp("tmp/intermediate.txt"),
    shell:
        "echo intermediate > {output}"


rule protected_out:
    output:
        protected("flags/protected.txt"),
    shell:
        "echo keep > {output}"


rule two_outputs:
    input:
        ancient("dir/many"),
        "tmp/intermediate.txt",
    output:
        first="final/first.txt",
        second="final/second.txt",
    shell:
        "ls {input[0]} > {output.first}; cat {input[1]} > {output.second}"


rule summary:
    input:
        rules.two_outputs.output,
    output:
        "final/summary.txt",
    shell:
        "cat {input} > {output}"


rule pipefail:
    output:
        "pipefail/checked.txt",
    shell:
        # under bash strict mode `false | true` fails; with `|| echo` it is caught
        "(false | true) && echo no-pipefail > {output} || echo pipefail-active > {output}"
