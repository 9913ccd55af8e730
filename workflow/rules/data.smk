# Prepare a dataset once into a cached tensor file that every training job loads.


rule prepare_data:
    output:
        results("data", "{dataset}.pt"),
    log:
        results("logs", "data", "{dataset}.log"),
    localrule: True
    conda:
        "../envs/trainfail.yaml"
    params:
        data_dir=config["data_dir"],
    shell:
        "python -m trainfail prepare-data {wildcards.dataset:q} --data-dir {params.data_dir:q} "
        "--out {output:q} > {log:q} 2>&1"
