# A checkpoint decides how many jobs follow; the DAG is re-evaluated after it.
import os

rule all:
    input:
        "aggregate.txt",


checkpoint split:
    output:
        directory("parts"),
    params:
        n=4,
    shell:
        "mkdir -p {output}; for i in $(seq 1 {params.n}); do echo $i > {output}/$i.txt; done"


rule square:
    input:
        "parts/{i}.txt",
    output:
        "squared/{i}.txt",
    shell:
        "echo $(( $(cat {input}) * $(cat {input}) )) > {output}"


def squared(wildcards):
    parts = checkpoints.split.get().output[0]
    ids = glob_wildcards(os.path.join(parts, "{i}.txt")).i
    return expand("squared/{i}.txt", i=sorted(ids, key=int))


rule aggregate:
    input:
        squared,
    output:
        "aggregate.txt",
    shell:
        "cat {input} > {output}"
