"""Training: one loop (loop.py) shared by the four checkpoint models (tasks.py).

config.py typed settings · device.py device/precision/seeds · ddp.py torchrun plumbing ·
checkpointing.py resumable state (safetensors + JSON; its layout and names: checkpoint_layout.py) ·
task_parts.py what tasks.py and dpo.py share · models.py builders and loaders ·
plots.py loss curve · checks.py blocking checks · run.py one checkpoint end to end ·
__main__.py the torchrun entry point · cli.py ``lineage validate-config``.
No Dagster in here (assets/training.py is the adapter).
"""
