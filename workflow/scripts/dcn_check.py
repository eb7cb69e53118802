from micml.diagnostics import write_dcn_check
from micml.workflow import logged

with logged(snakemake.log[0]):
    write_dcn_check(snakemake.output.json, snakemake.output.md, use_gpu=snakemake.resources.gpu > 0)
