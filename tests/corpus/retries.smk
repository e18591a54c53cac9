# Retries with attempt-dependent resources; a run: rule and a script-free
# fallback rule next to direct shell rules.
rule all:
    input:
        "retried.txt",
        "from_run.txt",
        "opted_out.txt",


rule retried:
    output:
        "retried.txt",
    resources:
        runtime=lambda wc, attempt: 10 * attempt,
    shell:
        "[ {resources.runtime} -ge 20 ] && echo attempt-runtime={resources.runtime} > {output}"


rule from_run:
    output:
        "from_run.txt",
    run:
        with open(output[0], "w") as out:
            out.write("written by a run block\n")


rule opted_out:
    output:
        "opted_out.txt",
    resources:
        matensemble_direct=0,
    shell:
        "echo opted out > {output}"
