# Prepare a dataset once into a cached tensor file that every training job loads.


rule prepare_data:
    output:
        "results/data/{dataset}.pt",
    params:
        data_dir=config["data_dir"],
    conda:
        "../envs/trainfail.yaml"
    log:
        "results/logs/data/{dataset}.log",
    shell:
        "python -m trainfail prepare-data {wildcards.dataset} --data-dir {params.data_dir:q} --out {output:q} > {log:q} 2>&1"
