# Formatting: named/unnamed input and output, params (also callables), wildcards,
# threads, resources, log, quoting modifiers, config and Snakefile globals,
# shell.prefix/suffix (which replaces strict mode) and the environment shell() sets.
configfile: "config.yaml"

shell.prefix("echo prefix-ran >&2; ")
shell.suffix("\necho suffix-ran >&2")

GREETING = "hello from a global"
SAMPLES = ["a", "b c"]


rule all:
    input:
        expand("out/{sample}/report.txt", sample=SAMPLES),


rule make_input:
    output:
        data="data/{sample}.txt",
    shell:
        "printf '%s\\n' {wildcards.sample:q} > {output.data:q}"


rule report:
    input:
        data="data/{sample}.txt",
        extra=["config.yaml"],
    output:
        report="out/{sample}/report.txt",
    params:
        factor=3,
        label=lambda wc: wc.sample.upper(),
        listed=["x", "y z"],
    threads: 2
    resources:
        runtime=5,
        custom="spam",
    log:
        "logs/report/{sample}.log",
    shell:
        """
        {{
          echo "sample={wildcards.sample} label={params.label} factor={params.factor}"
          echo "listed={params.listed:q}"
          echo "input={input.data:q} all={input:q}"
          echo "threads={threads} runtime={resources.runtime} custom={resources.custom}"
          echo "config={config[greeting]} global={GREETING} rule={rule}"
          echo "omp=$OMP_NUM_THREADS mkl=$MKL_NUM_THREADS"
          cat {input.data:q}
        }} > {output.report:q} 2> {log:q}
        echo "log line for {wildcards.sample}" >> {log:q}
        """
